"""torchvision twins of tinymbv2 models: errors against them and BatchNorms worth comparing."""
from __future__ import annotations

import numpy as np
import torch


def rel(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs| (theirs may be a torch tensor)."""
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def randomise_bn(tv, seed=0):
    """Non-trivial BN parameters and statistics, so eval mode is more than an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return tv
