"""Kernel sets: plain array functions that do the heavy arithmetic, no autograd.

A kernel set is an object whose methods are the kernels.
[ReferenceKernels][tinymbv2.kernels.reference.ReferenceKernels] (``reference.py``, NumPy
written to be read, the version the course teaches) defines every kernel, and is the
interface: a faster set subclasses it and overrides what it speeds up, inheriting the
rest.

* ``reference``: [ReferenceKernels][tinymbv2.kernels.reference.ReferenceKernels];
* ``numba``: [NumbaKernels][tinymbv2.kernels.numba.NumbaKernels], ``@njit`` kernels for
  fast CPU training (the default CPU set);
* ``cupy``: [CupyKernels][tinymbv2.kernels.cupy.CupyKernels], CUDA kernels through
  CuPy, for arrays that live on the GPU.

The differentiable ops of ``tinymbv2.functional`` ask
[kernels_for][tinymbv2.kernels.kernels_for] for the set that computes on their arrays
and call its methods by name, e.g.
``kernels_for(x).depthwise_conv2d_forward(x, w, stride, padding, dilation)``: from
there, an editor's go-to-definition lands in ``reference.py``, the readable implementation.

Shapes are NCHW; ``stride``, ``padding`` and ``dilation`` are ``(sh, sw)`` / ``(ph, pw)`` /
``(dh, dw)`` tuples (the dense and depthwise convolutions take a dilation, 1 by default);
outputs have the dtype of the inputs (float32 or float64) and are freshly allocated:
C-contiguous, except that the numba set returns the activations of small planes
channels-last (NCHW arrays over NHWC memory), and for inference (``conv2d_bn_eval``,
``inverted_residual_eval``) those of planes up to 112x112. Inputs may be non-contiguous or
channels-last.
"""
from __future__ import annotations

import numpy as np

from ..backend import active_kernel_set, get_array_module
from .reference import ReferenceKernels

SIMPLE_KERNELS = (
    "conv2d_forward",
    "conv2d_backward_input",
    "conv2d_backward_weight",
    "depthwise_conv2d_forward",
    "depthwise_conv2d_backward_input",
    "depthwise_conv2d_backward_weight",
    "pointwise_conv2d_forward",
    "pointwise_conv2d_backward_input",
    "pointwise_conv2d_backward_weight",
    "batch_norm_forward_train",
    "batch_norm_backward_train",
    "batch_norm_forward_eval",
    "matmul",
    "interpolate_forward",
    "interpolate_backward",
)
"""The kernels every set computes itself (the others are compositions of these)."""

FUSED_KERNELS = (
    "conv2d_bn_eval",
    "depthwise_conv2d_bn_eval",
    "pointwise_conv2d_bn_eval",
    "pointwise_conv2d_backward",
    "inverted_residual_eval",
    "depthwise_stage_forward_train",
    "depthwise_stage_backward_train",
    "rmsprop_update",
    "sgd_update",
    "cross_entropy_forward",
    "cross_entropy_backward",
)
"""The kernels that fuse several steps:
[ReferenceKernels][tinymbv2.kernels.reference.ReferenceKernels] composes them from the simple
ones (``rmsprop_update``, ``sgd_update``, the cross-entropy: a few lines of array arithmetic); a faster set may
override them with one pass."""

_instances: dict[str, ReferenceKernels] = {}


def kernel_set(name: str) -> ReferenceKernels:
    """The kernel set called ``name`` (one instance each, made on first use).

    The numba and CuPy sets are imported only then.

    Args:
        name: ``"reference"``, ``"numba"`` or ``"cupy"``.

    Returns:
        The set, a [ReferenceKernels][tinymbv2.kernels.reference.ReferenceKernels] or a
        subclass.

    Raises:
        ValueError: Another name.
    """
    if name not in _instances:
        if name == "reference":
            _instances[name] = ReferenceKernels()
        elif name == "numba":
            from .numba import NumbaKernels

            _instances[name] = NumbaKernels()
        elif name == "cupy":
            from .cupy import CupyKernels

            _instances[name] = CupyKernels()
        else:
            raise ValueError(f"kernel_set: expected 'reference', 'numba' or 'cupy', got {name!r}")
    return _instances[name]


def kernels_for(*arrays) -> ReferenceKernels:
    """The kernel set that computes on these arrays.

    The CuPy set if any of them lives on the GPU, else the active CPU set
    ([use_kernels][tinymbv2.backend.use_kernels]).

    Args:
        *arrays: The arrays an op computes on.

    Returns:
        The set, annotated as [ReferenceKernels][tinymbv2.kernels.reference.ReferenceKernels]
        so that an editor's go-to-definition lands on the readable kernels.
    """
    if get_array_module(*arrays) is not np:
        return kernel_set("cupy")
    return kernel_set(active_kernel_set())
