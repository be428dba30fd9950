"""Checks for the exercises of chapter 13. Architecture design: width, resolution and the block.

* ``check_make_divisible``: the channel rounding every width goes through;
* ``check_block_macs``: the multiply-adds of one inverted residual block, against ``summary``;
* ``check_head_fraction``: the share of the parameters in the part that does not shrink.
"""
from __future__ import annotations

import math

from ..models import mobilenet_v2, summary
from ..models.mobilenetv2 import InvertedResidual, make_divisible
from .checking import Hint, exercise, expect_close, expect_equal

__all__ = ["check_make_divisible", "check_block_macs", "check_head_fraction"]


@exercise
def check_make_divisible(answer) -> int:
    """``answer(v, divisor=8)`` must round ``v`` channels as torchvision does
    (`tinymbv2.models.mobilenetv2.make_divisible`): to the nearest multiple of
    ``divisor``, halves rounded up, never below ``divisor``, and one ``divisor`` more when
    that lost over 10% of ``v``.

    The cases are the widths the paper's family produces (channels times 0.35, 0.5, 0.75,
    1.0, 1.4), halves (52 -> 56: Python's ``round`` gives 48), values below the divisor, the
    10% rule (``32 * 0.35 = 11.2`` -> 16, not 8) and another divisor.

    Args:
        answer: your function, ``answer(v, divisor=8)`` -> an int number of channels.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    values = [(c * w, 8) for w in (0.35, 0.5, 0.75, 1.0, 1.4)
              for c in (16, 24, 32, 64, 96, 160, 320, 1280)]
    values += [(20.0, 8), (12.0, 8), (3.0, 8), (0.5, 8), (11.2, 8), (52.0, 8), (100.0, 8),
               (28.0, 4), (13.0, 16), (7.0, 4)]
    for v, divisor in values:
        expected = make_divisible(v, divisor)
        got = answer(v, divisor)
        if got == expected:
            continue
        case = f"make_divisible({v:g}, divisor={divisor})"
        down = int(v + divisor / 2) // divisor * divisor
        if v < divisor and got != expected:
            raise Hint(f"{case}: you gave {got!r}, expected {expected}: a layer keeps at least "
                       f"`divisor` channels")
        if down < 0.9 * v and got == max(divisor, down):
            raise Hint(f"{case}: you gave {got!r}, expected {expected}: rounding to {got} "
                       f"drops more than 10% of {v:g} channels, so add one divisor")
        if (v / divisor) % 1 == 0.5 and got == expected - divisor:
            raise Hint(f"{case}: you gave {got!r}, expected {expected}: {v:g} is halfway "
                       f"between two multiples; round halves up (int(v + divisor / 2)), "
                       f"Python's round() rounds them to even")
        if got == math.ceil(v / divisor) * divisor:
            raise Hint(f"{case}: you gave {got!r}, expected {expected}: round to the nearest "
                       f"multiple, not up")
        expect_equal(got, expected, case)
    return len(values)


def _expected_block_macs(c_in, c_out, t, stride, h, w) -> int:
    block = InvertedResidual(c_in, c_out, stride, t)
    return summary(block, input_size=(c_in, h, w)).total_macs


@exercise
def check_block_macs(block_macs) -> int:
    """``block_macs(c_in, c_out, t, stride, h, w)`` must give the multiply-adds of one
    inverted residual block (expansion ``t``, 3x3 depthwise with padding 1) on an ``h x w``
    input, as `tinymbv2.models.summary` counts them for the library's block.

    Cases: expansion 6 at stride 1 and 2, odd sizes at stride 2 (7 -> 4), expansion 1 (no
    expansion layer), a non-square input. Hints for the usual slips: the expansion layer
    counted when t = 1, every layer at the input resolution, ``h // stride`` for the output
    size, the depthwise layer counted as a dense one.

    Args:
        block_macs: your function, ``block_macs(c_in, c_out, t, stride, h, w)`` -> an
            int number of multiply-adds.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    cases = [(24, 24, 6, 1, 8, 8), (16, 24, 6, 2, 16, 16), (24, 32, 6, 2, 7, 7),
             (32, 16, 1, 1, 10, 10), (32, 16, 1, 2, 9, 9), (64, 96, 6, 1, 14, 6),
             (8, 8, 3, 2, 5, 11)]
    for c_in, c_out, t, stride, h, w in cases:
        expected = _expected_block_macs(c_in, c_out, t, stride, h, w)
        got = block_macs(c_in, c_out, t, stride, h, w)
        if got == expected:
            continue
        case = f"block_macs(c_in={c_in}, c_out={c_out}, t={t}, stride={stride}, h={h}, w={w})"
        hidden = round(c_in * t)
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        expand = h * w * c_in * hidden if t != 1 else 0
        dw, project = ho * wo * 9 * hidden, ho * wo * hidden * c_out
        if t == 1 and got == expected + h * w * c_in * hidden:
            raise Hint(f"{case}: you gave {got}, expected {expected}: with t = 1 the block has "
                       f"no expansion layer (it starts at the depthwise conv)")
        if stride == 2 and got == expand + h * w * (9 * hidden + hidden * c_out):
            raise Hint(f"{case}: you gave {got}, expected {expected}: the depthwise conv has "
                       f"stride {stride}, so it and the projection run on the "
                       f"{ho}x{wo} output, not the {h}x{w} input")
        if got == expand + (h // stride) * (w // stride) * (9 * hidden + hidden * c_out) != expected:
            raise Hint(f"{case}: you gave {got}, expected {expected}: with padding 1 a 3x3 "
                       f"conv of stride {stride} gives (h - 1) // {stride} + 1 = {ho} rows, "
                       f"not h // {stride} = {h // stride}")
        if got == expand + ho * wo * 9 * hidden * hidden + project:
            raise Hint(f"{case}: you gave {got}, expected {expected}: a depthwise conv filters "
                       f"each channel alone: 9 multiply-adds per output value, not 9 * hidden")
        raise Hint(f"{case}: you gave {got}, expected {expected} (expansion {expand:,}, "
                   f"depthwise {dw:,}, projection {project:,})")
    return len(cases)


@exercise
def check_head_fraction(head_fraction) -> int:
    """``head_fraction(width_mult, num_classes)`` must give the share of the parameters of
    ``mobilenet_v2(width_mult, num_classes)`` that sit in its head: ``features[18]`` (the
    1x1 conv to 1280 channels and its BatchNorm) and ``classifier`` (the Linear), counting
    every parameter (weights, biases, BatchNorm scales and shifts).

    Cases: widths 0.35, 0.5, 1.0 and 1.4, with 1000 and 10 classes, to 1e-9.

    Args:
        head_fraction: your function, ``head_fraction(width_mult, num_classes)`` -> a
            float in ``[0, 1]``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    cases = [(0.35, 1000), (0.5, 1000), (1.0, 1000), (1.4, 1000), (0.35, 10), (1.0, 10)]
    for width, classes in cases:
        model = mobilenet_v2(width_mult=width, num_classes=classes, seed=0)
        total = sum(int(p.size) for p in model.parameters())
        head_params = sum(int(p.size) for p in model.features[18].parameters())
        head_params += sum(int(p.size) for p in model.classifier.parameters())
        expected = head_params / total
        got = head_fraction(width, classes)
        case = f"head_fraction({width}, num_classes={classes})"
        if isinstance(got, (int, float)) and abs(got * total - head_params) > 0.5:
            missing = head_params - got * total
            if 0.5 < abs(missing) and abs(missing - classes) < 0.5:
                raise Hint(f"{case}: {missing:.0f} parameters short: the classifier's bias")
            if abs(missing - 2 * model.features[18][1].num_features) < 0.5:
                raise Hint(f"{case}: {missing:.0f} parameters short: the head's BatchNorm "
                           f"scale and shift")
            if got > 1:
                raise Hint(f"{case}: you gave {got:.4g}; expected a fraction of the whole, "
                           f"{head_params:,} / {total:,}")
        expect_close(got, expected, case, rtol=1e-9, atol=0.0)
    return len(cases)
