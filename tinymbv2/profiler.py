"""Where does the time go? Time per operation type in forward and backward.

    with tinymbv2.profiler.profile() as prof:
        loss = F.cross_entropy(model(x), y); loss.backward(); opt.step()
    print(prof.table())

Every [Function][tinymbv2.autograd.Function] call is timed (forward and backward
separately) and grouped by the layer type it belongs to; the rest of the wall
time (Python glue, the optimizer, graph bookkeeping) shows as "other".
Setting ``TINYMBV2_PROFILE=1`` makes ``make bench`` (``python -m benchmarks.train_step``)
print this for one training step at each size.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

from . import autograd

LAYER_TYPES = {
    "DepthwiseConv2d": "depthwise conv",
    "PointwiseConv2d": "pointwise conv",
    "DenseConv2d": "stem (dense) conv",
    "GroupedConv2d": "grouped conv",
    "ConvBatchNormEval": "conv + batch norm (eval)",
    "InvertedResidualEval": "inverted residual block (eval)",
    "DepthwiseStageTrain": "BN + depthwise + BN (train)",
    "BatchNormTrain": "batch norm",
    "BatchNormEval": "batch norm",
    "ReLU6": "relu6",
    "Linear": "linear",
    "AdaptiveAvgPool2d": "pooling",
    "Dropout": "dropout",
    "CrossEntropy": "loss",
}


class Profile:
    """Accumulated seconds and call counts per (Function name, pass)."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.wall = 0.0

    def record(self, name: str, phase: str, seconds: float) -> None:
        """Add one timed call.

        Args:
            name: The Function's class name.
            phase: ``"forward"`` or ``"backward"``.
            seconds: How long the call took.
        """
        self.seconds[(name, phase)] += seconds
        self.calls[(name, phase)] += 1

    def by_layer_type(self) -> dict:
        """{layer type: {"forward": s, "backward": s}}; unknown Functions go to "elementwise"."""
        out = defaultdict(lambda: {"forward": 0.0, "backward": 0.0})
        for (name, phase), s in self.seconds.items():
            out[LAYER_TYPES.get(name, "elementwise & other ops")][phase] += s
        return dict(out)

    def table(self) -> str:
        """The seconds per layer type and pass, and "other", as a printable table."""
        rows = sorted(self.by_layer_type().items(), key=lambda kv: -sum(kv[1].values()))
        measured = sum(sum(v.values()) for _, v in rows)
        lines = [f"{'layer type':<26}{'forward ms':>11}{'backward ms':>12}{'share':>8}"]
        for kind, v in rows:
            total = v["forward"] + v["backward"]
            lines.append(f"{kind:<26}{1e3 * v['forward']:>11.1f}{1e3 * v['backward']:>12.1f}"
                         f"{total / max(self.wall, 1e-12):>8.0%}")
        other = max(self.wall - measured, 0.0)
        lines.append(f"{'other (glue, optimizer)':<26}{'':>11}{'':>12}{other / max(self.wall, 1e-12):>8.0%}")
        lines.append(f"{'total wall time':<26}{1e3 * self.wall:>11.1f} ms")
        return "\n".join(lines)


@contextlib.contextmanager
def profile():
    """Time every op inside the block; yields the [Profile][tinymbv2.profiler.Profile]."""
    prof = Profile()
    previous = autograd._profiler
    autograd._profiler = prof
    start = time.perf_counter()
    try:
        yield prof
    finally:
        prof.wall = time.perf_counter() - start
        autograd._profiler = previous
