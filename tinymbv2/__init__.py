"""tinymbv2: MobileNetV2 built from scratch on NumPy, to learn how it really works.

    import tinymbv2
    from tinymbv2 import functional as F
    from tinymbv2.models import mobilenet_v2

    model = mobilenet_v2(width_mult=0.5, num_classes=10, small_input=True, seed=0)
    fast = tinymbv2.fuse(model)   # the same parameters, recognised layer patterns fused
    frozen = tinymbv2.freeze(model.eval())   # inference only: weights copied, kernels prepared
"""
from . import functional  # noqa: F401
from .autograd import Function, Tensor, is_grad_enabled, no_grad, tensor  # noqa: F401
from .backend import active_kernel_set, get_array_module, use_kernels  # noqa: F401
from .functional.tensor_methods import install_tensor_methods
from .fusion import fuse  # noqa: F401
from .frozen import freeze  # noqa: F401
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .random import manual_seed  # noqa: F401

# Tensor's operators (+, @, [], .sum(), ...) call the ops of tinymbv2.functional, which
# import the engine; so they are set on the class here, once, when the package starts.
install_tensor_methods(Tensor)

__version__ = "0.1.0"
