"""MobileNetV2's inverted residual block as one inference op.

The block (paper section 3.3, Table 1) is

    h = ReLU6(BN(conv1x1(x)))        expansion to t * Ci channels (absent when t = 1)
    h = ReLU6(BN(depthwise3x3(h)))   stride s, padding 1
    y = BN(conv1x1(h))               linear projection to Co channels
    y = x + y                        when s = 1 and Ci = Co

with every BatchNorm in eval mode (running statistics). Kernel sets that have an
``inverted_residual_eval`` kernel (``numba``) run it in one call, which keeps
the expanded tensor -- the block's biggest, t times its input -- in cache
instead of writing it to memory and reading it back; the others run the four
layers one after the other (:mod:`tinymbv2.kernels.layered`). Both give the
numbers of the separate ops up to float rounding.
"""
from __future__ import annotations

from ..autograd import Function, Tensor, is_grad_enabled
from ..backend import get_array_module, kernels_for
from ..kernels.layered import inverted_residual_eval_layered
from ._util import check_tensor


class InvertedResidualEval(Function):
    """Inference only: the whole block in one kernel call where the kernel set has one."""

    @staticmethod
    def forward(ctx, x, expand, depthwise, project, stride, residual):
        k = kernels_for(x)
        fused = getattr(k, "inverted_residual_eval", None)
        if fused is None:
            return inverted_residual_eval_layered(k, x, expand, depthwise, project, stride,
                                                  residual)
        return fused(x, expand, depthwise, project, stride, residual)

    @staticmethod
    def backward(ctx, g):  # never reached: inverted_residual_eval refuses to record a graph
        raise RuntimeError("inverted_residual_eval has no backward (inference only)")


def inverted_residual_eval(x, expand, depthwise, project, stride, residual) -> Tensor:
    """Inference only: an inverted residual block in one op (see the module).

    x: Tensor (N, Ci, H, W). ``expand``: None, or ``(weight (Ch, Ci, 1, 1), bn)``;
    ``depthwise``: ``(weight (Ch, 1, 3, 3), bn)``; ``project``: ``(weight (Co, Ch, 1, 1),
    bn)``; the weights are Tensors, each ``bn`` is ``(running_mean, running_var, weight,
    bias, eps, relu6)`` with arrays or Tensors (ReLU6 on expansion and depthwise, not on
    the projection, in MobileNetV2). ``stride``: 1 or 2; ``residual``: add x
    (needs stride 1 and Co = Ci). Returns (N, Co, ceil(H/s), ceil(W/s)).

    Records no graph: it refuses to run while gradients are being recorded for an
    input that requires them.
    """
    fn = "inverted_residual_eval"
    check_tensor(x, fn, "x", 4)
    tensors = [x] + [p[0] for p in (expand, depthwise, project) if p is not None]
    tensors += [a for p in (expand, depthwise, project) if p is not None for a in p[1][:4]]
    if is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors):
        raise RuntimeError(f"{fn}: inference only, it records no graph; call it under "
                           "tinymbv2.no_grad() (or run the block's layers to train)")
    xp = get_array_module(x.data)

    def layer(part):
        if part is None:
            return None
        weight, bn = part
        mean, var, gamma, beta, eps, relu6 = bn
        arrays = (xp.asarray(_data(a), dtype=x.dtype) for a in (mean, var, gamma, beta))
        return _data(weight), (*arrays, eps, relu6)

    return InvertedResidualEval.apply(x, layer(expand), layer(depthwise), layer(project),
                                      stride, residual)


def _data(a):
    return a.data if isinstance(a, Tensor) else a
