r"""Weight initialisation, PyTorch's ``torch.nn.init`` (paper section 6.1, torchvision).

Every function fills a Tensor (or an ndarray) in place and returns it. Values
are drawn in float64 from ``generator`` (an ``np.random.Generator``) or, when
None, from the package's seeded global one ([tinymbv2.random.manual_seed][]), then
cast to the tensor's dtype.

Fans of a weight of shape (out, in / groups, kh, kw) (a Linear's (out, in) has
receptive field 1):

$$
\text{fan_in} = \frac{\text{in}}{\text{groups}} \, k_h k_w, \qquad
\text{fan_out} = \text{out} \, k_h k_w
$$

so a depthwise 3x3 weight (C, 1, 3, 3) has $\text{fan_out} = 9C$, not $9C/\text{groups}$
(PyTorch's and torchvision's convention).

Kaiming He et al. (2015): to keep the variance of activations (fan_in) or of
gradients (fan_out) constant through ReLU layers, draw with

$$
\text{std} = \frac{\text{gain}}{\sqrt{\text{fan}}}, \qquad
\text{gain} = \sqrt{2} \text{ for ReLU}, \quad \sqrt{2 / (1 + a^2)} \text{ for leaky ReLU}
$$

normal: $N(0, \text{std}^2)$; uniform: $U(-\text{bound}, \text{bound})$ with
$\text{bound} = \sqrt{3}\,\text{std}$.
"""
from __future__ import annotations

import math

import numpy as np

from .. import random as _random
from ..autograd import Tensor
from ..backend import get_array_module

__all__ = [
    "calculate_gain", "constant_", "ones_", "zeros_", "normal_", "uniform_",
    "kaiming_normal_", "kaiming_uniform_", "fan_in_and_fan_out",
]


def _rng(generator):
    if generator is None:
        return _random.default_generator()
    if not isinstance(generator, np.random.Generator):
        raise TypeError(
            f"init: expected generator to be an np.random.Generator or None, "
            f"got {type(generator).__name__}"
        )
    return generator


def _fill(tensor, values):
    """Write float64 ``values`` into ``tensor`` in place, cast to its dtype and device."""
    arr = tensor.data if isinstance(tensor, Tensor) else tensor
    xp = get_array_module(arr)
    arr[...] = xp.asarray(values).astype(arr.dtype, copy=False)
    return tensor


def _shape(tensor):
    return tuple((tensor.data if isinstance(tensor, Tensor) else tensor).shape)


def calculate_gain(nonlinearity: str = "leaky_relu", param=None) -> float:
    r"""The gain that keeps a layer's variance: relu $\sqrt{2}$, tanh 5/3, linear/conv/sigmoid 1.

    Args:
        nonlinearity: ``"relu"``, ``"leaky_relu"``, ``"tanh"``, ``"sigmoid"``, ``"selu"``
            (3/4), ``"linear"``, ``"identity"`` or ``"conv1d"``/``"conv2d"``/``"conv3d"``.
        param: The negative slope $a$ of leaky ReLU (None: 0.01): gain $\sqrt{2 / (1 + a^2)}$.

    Returns:
        The gain.

    Raises:
        ValueError: An unknown ``nonlinearity``.
    """
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "sigmoid", "identity"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(
        f"calculate_gain: unknown nonlinearity {nonlinearity!r} (expected relu, leaky_relu, "
        "tanh, sigmoid, linear, conv2d or selu)"
    )


def fan_in_and_fan_out(tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight (out, in, kh, kw) or (out, in) (see the module's formula).

    Args:
        tensor: The weight, a Tensor or an array of at least 2 dimensions.

    Returns:
        ``(fan_in, fan_out)``.

    Raises:
        ValueError: ``tensor`` has fewer than 2 dimensions.
    """
    shape = _shape(tensor)
    if len(shape) < 2:
        raise ValueError(f"fan_in_and_fan_out: expected a weight with >= 2 dimensions, got {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def constant_(tensor, val: float):
    """Fill with one value, in place.

    Args:
        tensor: The Tensor or array to fill.
        val: The value.

    Returns:
        ``tensor``.
    """
    return _fill(tensor, np.full(_shape(tensor), val, dtype=np.float64))


def ones_(tensor):
    """Fill ``tensor`` with ones, in place; returns it."""
    return constant_(tensor, 1.0)


def zeros_(tensor):
    """Fill ``tensor`` with zeros, in place; returns it."""
    return constant_(tensor, 0.0)


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator=None):
    r"""Fill with $N(\text{mean}, \text{std}^2)$, in place.

    torchvision's classifier is drawn from $N(0, 0.01^2)$.

    Args:
        tensor: The Tensor or array to fill.
        mean: The mean.
        std: The standard deviation, >= 0.
        generator: An ``np.random.Generator``; None: the package's seeded global one.

    Returns:
        ``tensor``.

    Raises:
        ValueError: ``std < 0``.
    """
    if std < 0:
        raise ValueError(f"normal_: expected std >= 0, got {std}")
    return _fill(tensor, _rng(generator).normal(mean, std, size=_shape(tensor)))


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator=None):
    """Fill with $U(a, b)$, in place.

    Args:
        tensor: The Tensor or array to fill.
        a: The lower bound.
        b: The upper bound, >= ``a``.
        generator: An ``np.random.Generator``; None: the package's seeded global one.

    Returns:
        ``tensor``.

    Raises:
        ValueError: ``b < a``.
    """
    if b < a:
        raise ValueError(f"uniform_: expected a <= b, got a={a}, b={b}")
    return _fill(tensor, _rng(generator).uniform(a, b, size=_shape(tensor)))


def _kaiming_std(tensor, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming: expected mode 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError(f"kaiming: cannot initialise a tensor of shape {_shape(tensor)} (fan 0)")
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator=None):
    r"""$N(0, \text{std}^2)$ with $\text{std} = \text{gain} / \sqrt{\text{fan}}$, in place.

    torchvision's convolutions use ``mode="fan_out"``. The defaults are PyTorch's
    (leaky_relu with ``a=0`` has the ReLU gain $\sqrt{2}$).

    Args:
        tensor: The weight to fill (at least 2 dimensions).
        a: The negative slope of the leaky ReLU that follows (0: ReLU).
        mode: ``"fan_in"`` keeps the activations' variance, ``"fan_out"`` the gradients'.
        nonlinearity: The non-linearity that follows (see
            [calculate_gain][tinymbv2.nn.init.calculate_gain]).
        generator: An ``np.random.Generator``; None: the package's seeded global one.

    Returns:
        ``tensor``.

    Raises:
        ValueError: An unknown ``mode`` or ``nonlinearity``, or a fan of 0.
    """
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    return _fill(tensor, _rng(generator).normal(0.0, std, size=_shape(tensor)))


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None):
    r"""$U(-b, b)$ with $b = \sqrt{3}\,\text{gain} / \sqrt{\text{fan}}$, in place.

    PyTorch's default for Conv2d/Linear weights is ``a=sqrt(5)``, mode fan_in, which gives
    $b = 1 / \sqrt{\text{fan_in}}$.

    Args:
        tensor: The weight to fill (at least 2 dimensions).
        a: The negative slope of the leaky ReLU that follows (0: ReLU).
        mode: ``"fan_in"`` keeps the activations' variance, ``"fan_out"`` the gradients'.
        nonlinearity: The non-linearity that follows (see
            [calculate_gain][tinymbv2.nn.init.calculate_gain]).
        generator: An ``np.random.Generator``; None: the package's seeded global one.

    Returns:
        ``tensor``.

    Raises:
        ValueError: An unknown ``mode`` or ``nonlinearity``, or a fan of 0.
    """
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return _fill(tensor, _rng(generator).uniform(-bound, bound, size=_shape(tensor)))
