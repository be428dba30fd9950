"""An inverted residual block prepared once for inference: its weights fixed, a function of x.

``inverted_residual_eval`` takes the block's weights and BatchNorms at every call, as the
fused model hands them over, and at every call checks them, turns each BatchNorm into a
table of per-channel scale and shift and lays the weights out for its GEMMs. For a batch
of one 224 px image that is a fifth of a 14x14 block's time. A frozen model
(``tinymbv2.freeze``) does not change between calls, so it prepares each block once, here,
as an inference runtime does when it loads a graph, and then calls the kernel that
``inverted_residual_eval`` would run for the input's plane, with the same operands:
the same bits. (The numba set's ``inverted_residual_eval`` is this class, prepared for one
call.)

    prepared = PreparedBlock(kernels, expand, depthwise, project, stride, residual)
    y = prepared(x)            # == kernels.inverted_residual_eval(x, expand, ...)
"""
from __future__ import annotations

import functools

import numpy as np

from ..checks import same_float_dtype
from ..reference import ReferenceKernels
from . import block, block_channels_last, block_small
from .block import block_args


class PreparedBlock:
    """``kernels.inverted_residual_eval(x, expand, depthwise, project, stride, residual)`` as
    a function of x alone (see the module).

    Args:
        kernels: The numba kernel set (for planes no block kernel takes: layer by layer).
        expand: None (expansion ratio 1) or ``(w (Ch, Ci, 1, 1), bn)``.
        depthwise: ``(w (Ch, 1, 3, 3), bn)``, padding 1.
        project: ``(w (Co, Ch, 1, 1), bn)``.
        stride: 1 or 2.
        residual: Add x (stride 1, Ci = Co).

    Raises:
        ValueError: Weights of other shapes, a stride other than 1 or 2, or a residual
            that cannot be added.
        TypeError: Arrays of different dtypes.
    """

    def __init__(self, kernels, expand, depthwise, project, stride, residual):
        fn = "prepare_inverted_residual_eval"
        wdw = np.asarray(depthwise[0])
        ci = wdw.shape[0] if expand is None else np.shape(expand[0])[1]
        if wdw.dtype not in (np.float32, np.float64):
            raise TypeError(f"{fn}: expected float32 or float64 weights, got {wdw.dtype}")
        probe = np.empty((0, ci, 1, 1), wdw.dtype)  # the checks need an input: an empty one
        _, we, wdw, wpj, ep_e, ep_d, ep_p = block_args(fn, probe, expand, depthwise, project,
                                                       stride, residual)
        ch, co = wdw.shape[0], wpj.shape[0]
        self.kernels, self.layers = kernels, (expand, depthwise, project)
        self.stride, self.residual, self.ci, self.dtype = stride, bool(residual), ci, wdw.dtype
        self.nchw = (we.reshape(we.shape[0], ci), ep_e, wdw.reshape(ch, 3, 3), ep_d,
                     wpj.reshape(co, ch), ep_p)
        self._checked = (we, wdw, wpj, ep_e, ep_d, ep_p)

    @functools.cached_property
    def channels_last(self) -> tuple:
        """``block_channels_last.prepare``'s operands (W.T, filter taps, BatchNorm tables),
        made on the first plane that needs them (not for a call that runs in NCHW bands)."""
        return block_channels_last.prepare(*self._checked, self.dtype)

    def __call__(self, x):
        """The block's output (N, Co, ceil(H / s), ceil(W / s)) for x (N, Ci, H, W).

        Args:
            x: The block's input, an array of the weights' dtype, in either layout.

        Returns:
            The output, in the layout ``inverted_residual_eval`` gives for its plane.

        Raises:
            ValueError: x not 4-D, or not of Ci channels.
            TypeError: x of another dtype.
        """
        fn = "inverted_residual_eval"
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[1] != self.ci:
            raise ValueError(f"{fn}: expected an input (N, {self.ci}, H, W), got {x.shape}")
        if x.dtype != self.dtype:
            same_float_dtype(fn, x=x, weights=np.empty(0, self.dtype))
        s = self.stride
        if block_channels_last.supported(x, s):
            return block_channels_last.run(x, self.channels_last, s, self.residual)
        if block.fused_planes(x, s):
            return block.run(np.ascontiguousarray(x), self.nchw, s, self.residual)
        if block_small.supported(x, s):
            return block_small.run(x, self.channels_last, s, self.residual)
        # planes between the kernels' ranges: the layers one by one, on this set's kernels
        return ReferenceKernels.inverted_residual_eval(self.kernels, x, *self.layers, s,
                                                       self.residual)
