r"""Resizing images: ``interpolate``, bilinear or nearest, PyTorch's rules and numbers.

A segmentation network predicts at 1/16 of the input's resolution (its output stride) and
resizes its logits back to the input's size; this is that resize, on (N, C, H, W). Each
output pixel reads one (nearest) or four (bilinear) input pixels at fixed weights, so the
op is linear in x and its backward sends each output's gradient back to those pixels with
the same weights. The formulas of the source position, and why it is two matrix products,
are in [ReferenceKernels.interpolate_forward][tinymbv2.kernels.reference.ReferenceKernels.interpolate_forward].

The arguments follow ``torch.nn.functional.interpolate``: exactly one of ``size`` and
``scale_factor``; with a scale factor the output is $\lfloor n_\text{in} \cdot
\text{scale} \rfloor$ and the source positions use $1 / \text{scale}$ (not
$n_\text{in} / n_\text{out}$, which differ when the product is not whole);
``align_corners`` is False by default for bilinear and an error for nearest.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

from ..autograd import Function, Tensor
from ..kernels import kernels_for
from .checks import check_tensor

MODES = ("bilinear", "nearest")


class Interpolate(Function):
    """Bilinear or nearest resizing of the (H, W) planes.

    readable: ``kernels/reference.py``, ``ReferenceKernels.interpolate_forward``,
    ``interpolate_backward``.
    """

    @staticmethod
    def forward(ctx, x, size, mode, align_corners, scales):
        k = kernels_for(x)
        ctx.kernels, ctx.x_shape = k, x.shape
        ctx.args = (mode, align_corners, scales)
        return k.interpolate_forward(x, size, mode, align_corners, scales)

    @staticmethod
    def backward(ctx, g):
        return ctx.kernels.interpolate_backward(g, ctx.x_shape, *ctx.args)


def _two(fn: str, name: str, value, kind) -> tuple:
    """``value`` as a pair (an int or float is taken for both axes)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{fn}: expected {name} for the 2 spatial axes, got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{fn}: expected {name} as a number or a pair, got {value!r}")
    return pair


def output_size(fn: str, in_hw, size=None, scale_factor=None):
    """The output plane (Ho, Wo) and the scales the kernels use, from PyTorch's arguments.

    Args:
        fn: The op's name, for the error.
        in_hw: The input plane (H, W).
        size: (Ho, Wo) or an int for both, or None.
        scale_factor: (sh, sw) or a number for both, or None.

    Returns:
        ``((Ho, Wo), scales)``: ``scales`` is ``(sh, sw)`` as floats when a scale factor was
        given, else None.

    Raises:
        ValueError: Both or neither of ``size`` and ``scale_factor``, a size below 1, or a
            scale factor that is not positive or gives an empty plane.
        TypeError: A size that is not whole, or a scale factor that is not a number.
    """
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{fn}: expected exactly one of size and scale_factor, got "
                         f"size={size!r}, scale_factor={scale_factor!r}")
    if size is not None:
        out = tuple(int(v) for v in _two(fn, "size", size, Integral))
        if min(out) < 1:
            raise ValueError(f"{fn}: expected an output size >= 1, got {size!r}")
        return out, None
    scales = tuple(float(v) for v in _two(fn, "scale_factor", scale_factor, Real))
    if not all(s > 0 and math.isfinite(s) for s in scales):
        raise ValueError(f"{fn}: expected a positive scale_factor, got {scale_factor!r}")
    # PyTorch: floor(float(in) * scale), in double precision
    out = tuple(math.floor(float(n) * s) for n, s in zip(in_hw, scales))
    if min(out) < 1:
        raise ValueError(f"{fn}: scale_factor {scale_factor!r} turns the plane {tuple(in_hw)} "
                         f"into {out}, an empty one")
    return out, scales


def interpolate(x, size=None, scale_factor=None, mode: str = "bilinear", align_corners=None) -> Tensor:
    r"""``torch.nn.functional.interpolate`` for (N, C, H, W): bilinear or nearest.

    Args:
        x: The input (N, C, H, W), a floating Tensor.
        size: The output plane (Ho, Wo), or one int for both.
        scale_factor: Instead of ``size``: a number or a pair; the output is
            $\lfloor H \cdot s_h \rfloor \times \lfloor W \cdot s_w \rfloor$ and the source
            positions use $1 / s$ (PyTorch's rule, also for scales that do not divide).
        mode: ``"bilinear"`` (the default here: what segmentation heads use; PyTorch's
            default is ``"nearest"``) or ``"nearest"`` (the floor of the scaled index,
            PyTorch's ``"nearest"``).
        align_corners: Bilinear only: False (None means False) lines up pixel centres,
            $s = (o + 0.5)\,n_\text{in} / n_\text{out} - 0.5$ clamped at 0; True lines up
            the corner pixels, $s = o\,(n_\text{in} - 1) / (n_\text{out} - 1)$.

    Returns:
        y (N, C, Ho, Wo).

    Raises:
        TypeError: x is not a floating Tensor, or a size or scale of the wrong type.
        ValueError: x is not 4-D, a mode other than the two (``"linear"`` is for 3-D
            inputs in PyTorch), ``align_corners`` set with ``"nearest"``, or sizes as
            [output_size][tinymbv2.functional.resizing.output_size] says.
    """
    fn = "interpolate"
    check_tensor(x, fn, "x")
    if mode not in MODES:
        raise ValueError(f"{fn}: expected mode 'bilinear' or 'nearest' for a 4-D input "
                         f"(PyTorch's 'linear' is for 3-D, 'trilinear' for 5-D), got {mode!r}")
    if x.ndim != 4:
        raise ValueError(f"{fn}: expected x of rank 4 (N, C, H, W), got shape {x.shape}")
    if mode == "nearest" and align_corners is not None:
        # PyTorch's own rule: the corners mean nothing to a nearest lookup
        raise ValueError(f"{fn}: align_corners can only be set with mode 'bilinear', "
                         f"got align_corners={align_corners!r} with mode 'nearest'")
    if align_corners is not None and not isinstance(align_corners, bool):
        raise TypeError(f"{fn}: expected align_corners True, False or None, got {align_corners!r}")
    out, scales = output_size(fn, x.shape[2:], size, scale_factor)
    return Interpolate.apply(x, size=out, mode=mode, align_corners=bool(align_corners), scales=scales)
