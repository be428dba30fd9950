"""The window of a convolution's tap: the one picture behind every convolution kernel.

Output pixel $(o_h, o_w)$ of a convolution reads, through tap $(i, j)$ of its kernel, the
padded input's pixel $(o_h s_h + i d_h,\\; o_w s_w + j d_w)$ (``reference.py``'s module
docstring tells the whole story). Over all outputs, that is one strided slice of the padded
input: the tap's *window*. The float reference kernels (``reference.py``) and the int8 ones
(``int8_reference.py``) both loop over the taps and work on their windows.
"""
from __future__ import annotations


def tap_window(xp, i, j, out_hw, stride, dilation):
    """The (N, C, Ho, Wo) view of padded ``xp`` that kernel tap (i, j) reads.

    ``window[n, c, oh, ow] = xp[n, c, oh*sh + i*dh, ow*sw + j*dw]``. A view, so
    ``tap_window(gxp, ...) += v`` writes into ``gxp``.

    Args:
        xp: The zero-padded input (N, C, H + 2 ph, W + 2 pw).
        i: The tap's row.
        j: The tap's column.
        out_hw: (Ho, Wo).
        stride: (sh, sw).
        dilation: (dh, dw).

    Returns:
        The view.
    """
    (ho, wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    top, left = i * dh, j * dw
    return xp[:, :, top : top + sh * (ho - 1) + 1 : sh, left : left + sw * (wo - 1) + 1 : sw]
