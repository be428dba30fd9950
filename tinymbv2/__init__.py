"""tinymbv2: MobileNetV2 built from scratch on NumPy, to learn how it really works.

    import tinymbv2
    from tinymbv2 import functional as F
"""
from . import functional  # noqa: F401
from .autograd import Function, Tensor, is_grad_enabled, no_grad, tensor  # noqa: F401
from .backend import active_kernel_set, get_array_module, use_kernels  # noqa: F401
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .random import manual_seed  # noqa: F401

__version__ = "0.1.0"
