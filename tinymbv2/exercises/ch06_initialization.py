"""Checks for the exercises of chapter 6. Weight initialisation.

* [check_kaiming_std][tinymbv2.exercises.ch06_initialization.check_kaiming_std]: the Kaiming
  (He) standard deviation of a weight from its shape and a mode, against ``nn.init``'s fans and
  ReLU gain.
* [check_init_like_torchvision][tinymbv2.exercises.ch06_initialization.check_init_like_torchvision]:
  a whole MobileNetV2 initialised as torchvision does, checked layer by layer by the statistics
  of the weights it drew.

The usual slips get a hint of their own: the fan divided by the groups, the kernel area
forgotten, the ReLU gain forgotten, fan_in for fan_out, the variance for the std, the
classifier drawn like a convolution.
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn
from ..models.mobilenetv2 import MobileNetV2
from .checking import Hint, exercise, expect_close

__all__ = ["check_kaiming_std", "check_init_like_torchvision"]

# (shape, what the shape is): a stem, pointwise and depthwise convs of MobileNetV2, a 5x5 and a
# rectangular kernel, a Linear (out, in)
SHAPES = [((32, 3, 3, 3), "the stem conv"), ((96, 16, 1, 1), "an expansion 1x1 conv"),
          ((144, 1, 3, 3), "a depthwise 3x3 conv"), ((1280, 320, 1, 1), "the head 1x1 conv"),
          ((10, 1280), "a Linear layer"), ((64, 32, 5, 5), "a 5x5 conv"),
          ((8, 4, 3, 1), "a 3x1 conv")]


@exercise
def check_kaiming_std(answer):
    """Check ``answer(shape, mode)`` -> the std of ``kaiming_normal_`` for a ReLU network,
    $\\sqrt{2 / \\text{fan}}$, with ``mode`` "fan_in" or "fan_out".

    The reference takes the fans from ``nn.init.fan_in_and_fan_out`` (out x kh x kw and
    in/groups x kh x kw; a Linear's receptive field is 1) and the gain from
    ``nn.init.calculate_gain("relu")``. Cases: seven shapes (conv, depthwise, Linear, 5x5,
    3x1), both modes.

    Args:
        answer: the learner's ``kaiming_std(shape, mode)``.

    Returns:
        The number of cases checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    gain = nn.init.calculate_gain("relu")
    cases = 0
    for shape, kind in SHAPES:
        fan_in, fan_out = nn.init.fan_in_and_fan_out(np.empty(shape))
        for mode, fan, other in (("fan_out", fan_out, fan_in), ("fan_in", fan_in, fan_out)):
            cases += 1
            what = f"kaiming_std({shape}, {mode!r}) ({kind})"
            try:
                got = float(answer(shape, mode))
            except (TypeError, ValueError):
                raise Hint(f"{what}: expected a number") from None
            expected = gain / math.sqrt(fan)
            if math.isclose(got, expected, rel_tol=1e-6):
                continue
            area = int(np.prod(shape[2:])) if len(shape) > 2 else 1
            other_mode = "fan_in" if mode == "fan_out" else "fan_out"
            slips = [(math.sqrt(2 / other), f"that is the {other_mode} std; {mode} = {fan}"),
                     (1 / math.sqrt(fan), "the ReLU gain sqrt(2) is missing: std = sqrt(2 / fan)"),
                     (2 / fan, "that is the variance 2 / fan; the std is its square root"),
                     (math.sqrt(2 / (fan / area)), f"the fan counts the kernel area too: "
                      f"{mode} = {'out' if mode == 'fan_out' else 'in/groups'} x {area} = {fan}")]
            if shape[1] == 1 and mode == "fan_out":
                slips.insert(0, (math.sqrt(2 / area), f"PyTorch's fan_out of a depthwise weight is "
                                 f"out x kh x kw = {fan}: it is not divided by the groups"))
            for value, hint in slips:
                if math.isclose(got, value, rel_tol=1e-6):
                    raise Hint(f"{what}: you gave {got:.6g}, expected {expected:.6g}: {hint}")
            raise Hint(f"{what}: you gave {got:.6g}, expected sqrt(2 / {fan}) = {expected:.6g}")
    return cases


SCRAMBLED = 0.7  # what every parameter holds before the answer runs: no initialisation gives it


def _scramble(model) -> None:
    """Fill every parameter with ``SCRAMBLED``, so that a layer the answer skips is seen."""
    for p in model.parameters():
        p.data[...] = SCRAMBLED


@exercise
def check_init_like_torchvision(answer):
    """Check ``answer(model, rng)``, which must re-initialise a MobileNetV2 in place as
    torchvision does: every conv weight from $N(0, 2/\\text{fan_out})$, every BatchNorm
    $\\gamma = 1, \\beta = 0$, the Linear weight from $N(0, 0.01^2)$ and its bias 0, drawing
    from the ``np.random.Generator`` it is given.

    The model (width 0.5, 10 classes) starts with every parameter at 0.7. Random draws are
    judged by their statistics, per layer: the mean within 5 standard errors of 0 (from the
    sample's own std) and the sample std within 25% of the target. The smallest layer, 144
    weights, has a standard error of about 6% on its std, so a right answer passes with any
    seed; the usual slips are off by a factor of 1.4 or more.

    Args:
        answer: the learner's ``init_like_torchvision(model, rng)``.

    Returns:
        The number of layers checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    model = MobileNetV2(num_classes=10, width_mult=0.5, generator=np.random.default_rng(0))
    _scramble(model)
    answer(model, np.random.default_rng(2018))
    layers = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            expect_close(m.weight.data, np.ones(m.num_features), f"{name}.weight (BatchNorm gamma)")
            expect_close(m.bias.data, np.zeros(m.num_features), f"{name}.bias (BatchNorm beta)")
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.data.astype(np.float64)
            fan_in, fan_out = nn.init.fan_in_and_fan_out(w)
            target = 0.01 if isinstance(m, nn.Linear) else math.sqrt(2 / fan_out)
            what = f"{name}.weight {w.shape}"
            if np.all(m.weight.data == m.weight.data.dtype.type(SCRAMBLED)):
                raise Hint(f"{what} was not re-initialised (every {type(m).__name__} needs it)")
            std, mean = float(w.std()), float(w.mean())
            if abs(mean) > 5 * max(std, 1e-12) / math.sqrt(w.size):
                raise Hint(f"{what}: the weights' mean is {mean:.3g}; draw them around 0")
            if not 0.75 < std / target < 1.25:
                if isinstance(m, nn.Linear):
                    kaiming = "the classifier is drawn from N(0, 0.01^2), not with a Kaiming std"
                    slips = {math.sqrt(2 / fan_out): kaiming, math.sqrt(2 / fan_in): kaiming}
                else:
                    slips = {math.sqrt(2 / fan_in): "you used fan_in; torchvision's convs use "
                                                    f"mode='fan_out' (= {fan_out} here)",
                             math.sqrt(1 / fan_out): "the ReLU gain sqrt(2) is missing"}
                    if m.groups > 1:  # fan_out / groups = fan_in = 9 for a depthwise weight
                        slips[math.sqrt(2 / fan_in)] = (
                            f"a depthwise weight's fan_out is out x 3 x 3 = {fan_out}, neither "
                            "divided by the groups nor its fan_in")
                hint = next((h for value, h in slips.items()
                             if value != target and 0.8 < std / value < 1.25), "")
                raise Hint(f"{what}: the weights' std is {std:.4g}, expected about {target:.4g}"
                           + (f": {hint}" if hint else ""))
            if m.bias is not None:
                expect_close(m.bias.data, np.zeros(m.bias.shape), f"{name}.bias")
            layers += 1
    return layers
