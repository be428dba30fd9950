"""Modules: ``Module``, ``Parameter``, the layers, ``Sequential`` and ``init``.

PyTorch's ``torch.nn`` names and semantics, so ``state_dict`` keys and module
trees carry over from torchvision unchanged.
"""
from . import init  # noqa: F401
from .container import ModuleList, Sequential  # noqa: F401
from .layers import (  # noqa: F401
    AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, Linear, ReLU, ReLU6, Sigmoid,
    Upsample,
)
from .module import Module, Parameter  # noqa: F401
from .state import IncompatibleKeys, StateDictError  # noqa: F401
