"""The run that the 2-rank checks repeat on every side (tinymbv2 under mpirun, one tinymbv2
process, PyTorch DDP): MobileNetV2-0.35 in float64 on 16 x 16 images, 5 SGD steps on
global batches of 8, each rank taking the DistributedSampler shard of a step's batch
(shuffled with seed 0, epoch = step, as PyTorch's sampler does)."""
from __future__ import annotations

import numpy as np

STEPS, BATCH, SIZE, CLASSES, WIDTH = 5, 8, 16, 10, 0.35
# A small step: random images and labels on batches of 8 make a chaotic landscape, where at
# lr 0.1 a 1e-15 change of the weights grows to 1e-7 in 5 steps (and to 1e-13 at this lr),
# which would hide any difference between the implementations.
LR, MOMENTUM = 0.001, 0.9
BUCKET_CAP_MB = 0.25  # several buckets for a 0.35-wide net (about 0.4M float64 parameters)


def batch(step: int):
    """The global batch of step ``step``: images (8, 3, 16, 16) float64, labels (8,) int64."""
    rng = np.random.default_rng(100 + step)
    return (rng.standard_normal((BATCH, 3, SIZE, SIZE)),
            rng.integers(0, CLASSES, BATCH).astype(np.int64))


def tinymbv2_model():
    """MobileNetV2-0.35 (small-input strides, no dropout), float64, seed 0."""
    from tinymbv2.models import mobilenet_v2

    return mobilenet_v2(WIDTH, CLASSES, dropout=0.0, small_input=True, seed=0).double()


def torchvision_model():
    """The same architecture in torchvision (the small-input strides patched in), float64."""
    import torchvision

    tv = torchvision.models.mobilenet_v2(width_mult=WIDTH, num_classes=CLASSES, dropout=0.0)
    tv.features[0][0].stride = (1, 1)  # stem
    tv.features[2].conv[1][0].stride = (1, 1)  # first block of the 24-channel stage
    # At width 0.35 that block maps 8 channels to 8: at stride 1 tinymbv2 gives it its
    # shortcut, where torchvision decided at construction (stride 2) that it has none.
    for ours, theirs in zip(tinymbv2_model().blocks, list(tv.features)[1:-1]):
        theirs.use_res_connect = ours.use_res_connect
    return tv.double()


def rel(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs| (0 when both are all zeros)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = np.abs(theirs).max()
    diff = np.abs(ours - theirs).max()
    return float(diff / scale) if scale > 0 else float(diff)


def branch_net(rank: int):
    """For find_unused_parameters across ranks: ``a`` used on every rank, ``b`` only on rank
    1, ``c`` on none. Float64, seed 0; returns (net, loss function of the net)."""
    import tinymbv2
    from tinymbv2 import Tensor, nn

    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3, dtype=np.float64)
            self.b = nn.Linear(3, 3, dtype=np.float64)
            self.c = nn.Linear(3, 3, dtype=np.float64)

        def forward(self, x):
            h = self.a(x)
            return self.b(h) if rank == 1 else h

    tinymbv2.manual_seed(0)
    net = Branches()
    x = Tensor(np.random.default_rng(rank).standard_normal((5, 4)))
    return net, lambda model: (model(x) * model(x)).mean()
