"""Random inverted residual blocks for inference and PyTorch's answer for them, shared by the
functional op's tests (tests/functional) and the numba kernel's (tests/kernels)."""
from __future__ import annotations

import numpy as np
import torch


# (n, ci, h, w, expansion t, co, stride, residual): blocks both fused kernels are checked on
CASES = [
    (2, 4, 9, 8, 6, 4, 1, True),       # residual
    (1, 3, 17, 15, 1, 5, 2, False),    # no expansion, stride 2, odd width
    (1, 8, 20, 19, 6, 8, 2, False),    # stride 2, odd width: the last column reads padding
    (2, 3, 23, 12, 4, 3, 1, True),
]


def bn_eval_params(rng, c, relu6):
    """A BatchNorm in eval mode as the fused kernels take it: (mean, var, weight, bias, eps,
    relu6), with non-trivial statistics."""
    return (rng.standard_normal(c) * 0.1, rng.uniform(0.5, 2.0, c),
            rng.standard_normal(c) * 2, rng.standard_normal(c) + 2, 1e-5, relu6)


def block_case(n, ci, h, w, t, co, stride, residual, seed=0):
    """x (n, ci, h, w) and the block's (expand or None, depthwise, project) parts, float64."""
    rng = np.random.default_rng(seed)
    ch = ci * t
    x = rng.standard_normal((n, ci, h, w))
    expand = None if t == 1 else (rng.standard_normal((ch, ci, 1, 1)), bn_eval_params(rng, ch, True))
    depthwise = (rng.standard_normal((ch, 1, 3, 3)), bn_eval_params(rng, ch, True))
    project = (rng.standard_normal((co, ch, 1, 1)), bn_eval_params(rng, co, False))
    return x, expand, depthwise, project


def torch_block(x, expand, depthwise, project, stride, residual):
    """The block computed by torch.nn.functional, layer by layer, in float64."""
    f = torch.nn.functional

    def conv_bn(h, part, **conv):
        w, (mean, var, gamma, beta, eps, relu6) = part
        h = f.batch_norm(f.conv2d(h, torch.tensor(w), **conv), torch.tensor(mean),
                         torch.tensor(var), torch.tensor(gamma), torch.tensor(beta),
                         False, 0.1, eps)
        return f.relu6(h) if relu6 else h

    tx = torch.tensor(x)
    h = tx if expand is None else conv_bn(tx, expand)
    h = conv_bn(h, depthwise, stride=stride, padding=1, groups=h.shape[1])
    y = conv_bn(h, project)
    return (tx + y if residual else y).numpy()
