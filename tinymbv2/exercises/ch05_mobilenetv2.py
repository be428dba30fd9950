"""Checks for the exercises of chapter 5. The inverted residual block and MobileNetV2.

* [check_block_plan][tinymbv2.exercises.ch05_mobilenetv2.check_block_plan]: the
  ``(inp, oup, stride, t)`` of the 17 blocks built from Table 2, at five widths, against
  ``MobileNetV2(width_mult=w).blocks``.
* [check_feature_sizes][tinymbv2.exercises.ch05_mobilenetv2.check_feature_sizes]: the side
  of the feature map after each of the 19 stages, against ``summary`` (odd sizes, tiny
  images, ``small_input``).
* [check_block_params][tinymbv2.exercises.ch05_mobilenetv2.check_block_params]: one block's
  trainable parameters against the block's own ``parameters()``.

Each names the first wrong case; the usual mistakes (one block per row, a stride on every
repeat, widths not rounded to multiples of 8, h // 2 rows for an odd h, an expansion conv when
t = 1, a dense depthwise conv, BatchNorm without its parameters or with its running
statistics) get a hint of their own.
"""
from __future__ import annotations

import math

import numpy as np

from ..models.mobilenetv2 import TABLE2, InvertedResidual, MobileNetV2, make_divisible
from ..models.summary import summary
from .checking import Hint, exercise

__all__ = ["check_block_plan", "check_feature_sizes", "check_block_params"]

WIDTHS = (1.0, 0.5, 0.35, 0.75, 1.4)


def _as_number(value, what: str) -> float:
    """``value`` as a float (an int, a NumPy scalar, or a formula's float result)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Hint(f"{what}: expected a number, got {type(value).__name__}") from None
    if not math.isfinite(number):
        raise Hint(f"{what}: you gave {value!r}, expected a finite count")
    return number


def _same(a: float, b: float) -> bool:
    """Equal counts, allowing a formula's float rounding (counts are exact integers)."""
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def _rows_of_blocks():
    """[(row index, repeat index)] of the 17 blocks: which Table 2 row each comes from."""
    return [(r, i) for r, (_, _, n, _) in enumerate(TABLE2) for i in range(n)]


@exercise
def check_block_plan(answer):
    """Check ``answer(width_mult)`` -> the 17 blocks' ``(inp, oup, stride, t)``.

    Cases: widths 1.0, 0.5, 0.35, 0.75 and 1.4 (1000 classes does not matter here), each block
    compared with ``MobileNetV2(width_mult=w).blocks`` (its ``inp``, ``oup``, ``stride``,
    ``expand_ratio``).

    Args:
        answer: the learner's ``block_plan(width_mult)``.

    Returns:
        The number of widths checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    origin = _rows_of_blocks()
    for w in WIDTHS:
        expected = [(b.inp, b.oup, b.stride, b.expand_ratio)
                    for b in MobileNetV2(num_classes=10, width_mult=w,
                                         generator=np.random.default_rng(0)).blocks]
        got = answer(w)
        try:
            plan = [tuple(int(v) for v in row) for row in got]
        except (TypeError, ValueError):
            raise Hint(f"width {w}: expected a list of (inp, oup, stride, t) tuples, "
                       f"got {got!r:.80}") from None
        if len(plan) == len(TABLE2):
            raise Hint(f"width {w}: you gave {len(plan)} blocks, one per row of Table 2; each row "
                       f"(t, c, n, s) is n blocks, {len(expected)} in all")
        if len(plan) != len(expected):
            raise Hint(f"width {w}: you gave {len(plan)} blocks, expected {len(expected)} "
                       "(the n of the rows add up to 17)")
        for i, (mine, right) in enumerate(zip(plan, expected)):
            if len(mine) != 4:
                raise Hint(f"width {w}, block {i + 1}: expected 4 numbers (inp, oup, stride, t), "
                           f"got {mine}")
            if mine == right:
                continue
            row, repeat = origin[i]
            t, c, n, s = TABLE2[row]
            where = f"width {w}, block {i + 1} (row {row + 1} of Table 2, repeat {repeat + 1} of {n})"
            if mine[2] != right[2] and repeat > 0 and mine[2] == s:
                raise Hint(f"{where}: stride {mine[2]}, expected 1: only the first block of a row "
                           f"has stride s = {s}; its repeats have stride 1")
            if mine[1] != right[1] and mine[1] in (int(c * w), round(c * w)):
                raise Hint(f"{where}: {mine[1]} output channels, expected {right[1]}: round every "
                           f"width with make_divisible(c * width_mult) = "
                           f"make_divisible({c * w:g}) = {make_divisible(c * w)}")
            if mine[0] != right[0] and i == 0:
                raise Hint(f"{where}: input {mine[0]} channels, expected {right[0]}: the first "
                           f"block reads the stem's make_divisible(32 * width_mult) channels")
            if mine[0] != right[0]:
                raise Hint(f"{where}: input {mine[0]} channels, expected {right[0]}: a block's "
                           f"input is the previous block's output")
            raise Hint(f"{where}: you gave (inp, oup, stride, t) = {mine}, expected {right}")
    return len(WIDTHS)


def _feature_sizes(model, image_size: int) -> list[int]:
    """The side of each of ``model.features``' 19 outputs for an image_size x image_size input,
    read from ``summary`` (the last row under ``features.i`` is that stage's output)."""
    rows = summary(model, input_size=(3, image_size, image_size)).rows
    return [next(r for r in reversed(rows) if r.name.startswith(f"features.{i}.")).output_shape[2]
            for i in range(len(model.features))]


@exercise
def check_feature_sizes(answer):
    """Check ``answer(image_size, small_input)`` -> the side of the feature map after each of
    the 19 stages of ``model.features`` (stem, 17 blocks, head) for a square input.

    Cases: 224, 97 (odd sizes round up), 28 and 7 px, each with ``small_input`` False and True,
    against ``summary`` of the library's model.

    Args:
        answer: the learner's ``feature_sizes(image_size, small_input)``.

    Returns:
        The number of cases checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    models = {flag: MobileNetV2(num_classes=10, width_mult=0.35, small_input=flag,
                                generator=np.random.default_rng(0)) for flag in (False, True)}
    cases = [(size, flag) for size in (224, 97, 28, 7) for flag in (False, True)]
    for size, flag in cases:
        expected = _feature_sizes(models[flag], size)
        what = f"feature_sizes({size}, small_input={flag})"
        got = answer(size, flag)
        try:
            sizes = [int(v) for v in got]
        except (TypeError, ValueError):
            raise Hint(f"{what}: expected a list of 19 ints, got {got!r:.80}") from None
        if len(sizes) != len(expected):
            raise Hint(f"{what}: you gave {len(sizes)} sizes, expected {len(expected)}: one per "
                       "stage of model.features, the stem, the 17 blocks and the head")
        if sizes == expected:
            continue
        i = next(i for i, (a, b) in enumerate(zip(sizes, expected)) if a != b)
        stage = "the stem" if i == 0 else "the head" if i == len(expected) - 1 else f"block {i}"
        wrong = f"{what}: after {stage} (features.{i}) you gave {sizes[i]}, expected {expected[i]}"
        before = size if i == 0 else expected[i - 1]
        if before % 2 and expected[i] == (before + 1) // 2 and sizes[i] == before // 2:
            raise Hint(f"{wrong}: a 3x3 conv with stride 2 and padding 1 on {before} rows gives "
                       f"ceil({before}/2) = {expected[i]} rows, not {before} // 2")
        if flag and i in (0, 2) and sizes[i] == -(-before // 2):
            raise Hint(f"{wrong}: with small_input the stem and the first block of row 2 have "
                       "stride 1 (the other strides stay)")
        if sizes[i] == -(-before // 2) and expected[i] == before:
            raise Hint(f"{wrong}: this block keeps the size: only the first block of a row has "
                       "stride s, and rows 1 and 5 (t, c, n, s) have s = 1")
        raise Hint(wrong)
    return len(cases)


def _block_cases():
    """(inp, oup, t) for the parameter check: blocks of the network (t = 1, 6) and seeded random
    blocks (inp, oup from 8 to 32, t in 1, 3, 6)."""
    cases = [(16, 24, 6), (24, 24, 6), (160, 320, 6), (32, 16, 1), (24, 32, 6), (8, 16, 3)]
    rng = np.random.default_rng(5)
    for _ in range(5):
        cases.append((int(rng.choice([8, 16, 24, 32])), int(rng.choice([8, 16, 24, 32])),
                      int(rng.choice([1, 3, 6]))))
    return cases


@exercise
def check_block_params(answer):
    """Check ``answer(inp, oup, t)`` -> the trainable parameters of
    ``InvertedResidual(inp, oup, stride, t)`` (the stride changes nothing).

    The reference is the sum of the block's ``parameters()`` sizes: conv weights (no biases)
    and each BatchNorm's weight and bias (its running statistics are buffers). Cases: blocks
    of the network (t = 1 and 6) and seeded random ones.

    Args:
        answer: the learner's ``block_params(inp, oup, t)``.

    Returns:
        The number of cases checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    cases = sorted(set(_block_cases()))
    for inp, oup, t in cases:
        block = InvertedResidual(inp, oup, 1, t)
        expected = sum(int(p.size) for p in block.parameters())
        what = f"InvertedResidual({inp}, {oup}, stride, {t})"
        got = _as_number(answer(inp, oup, t), what)
        if _same(got, expected):
            continue
        wrong = f"{what}: you gave {got:,.0f}, expected {expected:,}"
        hid = block.hidden_dim
        convs = (inp * hid if t != 1 else 0) + 9 * hid + hid * oup
        bn_channels = (hid if t != 1 else 0) + hid + oup
        mistakes = {
            "each BatchNorm has 2 trainable parameters per channel, its weight (gamma) and bias "
            "(beta)": [convs],
            "running_mean and running_var are buffers, not trainable parameters; a BatchNorm has "
            "2 parameters per channel": [convs + 4 * bn_channels],
            "the convolutions have no bias (bias=False): the BatchNorm after each one has its own "
            "beta": [expected + bn_channels],
            f"the depthwise conv has one 3x3 filter per channel, 9 x {hid} weights":
                [expected - 9 * hid + 9 * hid * hid],
            "with t = 1 there is no expansion conv (nor its BatchNorm)":
                [expected + inp * hid + 2 * hid] if t == 1 else [],
        }
        for hint, values in mistakes.items():
            if any(_same(got, v) for v in values):
                raise Hint(f"{wrong}: {hint}")
        raise Hint(f"{wrong} (hidden width round({inp} x {t}) = {hid})")
    return len(cases)
