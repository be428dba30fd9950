r"""Observers: the float range of a tensor, from the calibration batches that pass through it.

Post-training quantization needs, for every activation, a range $[a, b]$ to spread the 256
integers over (``qparams.choose_qparams`` turns it into a scale and a zero point). The
network is run on a few hundred calibration images and an observer watches each activation:

* ``MinMaxObserver``: the smallest and largest value seen (PyTorch's ``MinMaxObserver``):
  nothing is clipped, but one outlier stretches the step $s$ for every other value;
* ``PercentileObserver``: the $p$-th and $(100 - p)$-th percentiles of each batch, averaged
  over the batches: the rare extremes are clipped, and the step is finer for the rest;
* ``MSEObserver``: the range $[\alpha a, \alpha b]$ ($a, b$ the min and max) whose
  quantization error $\lVert x - \hat x \rVert^2$ over the observed values is smallest, on a
  grid of $\alpha \in (0, 1]$: the trade between clipping the tails and rounding the middle,
  measured rather than guessed.

A ReLU6's output needs none of them: its range is $[0, 6]$ by construction, the reason the
paper gives for ReLU6 (section 3.2, "robustness when used with low-precision computation").

Each observer is called on arrays (NumPy or a Tensor's data) and keeps only what its range
needs: two numbers, per-batch percentiles, or a fixed-size sample of the values
(``MSEObserver``, every value's chance to be kept the same).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from .qparams import choose_qparams, quant_range


def _values(x, who: str) -> np.ndarray:
    """x's values as a flat float64 NumPy array, checked finite and non-empty."""
    a = np.asarray(x.data if isinstance(x, Tensor) else x)
    if not np.issubdtype(a.dtype, np.floating) or a.size == 0:
        raise ValueError(f"{who}: expected a non-empty float array, got {a.dtype} of shape {a.shape}")
    a = a.astype(np.float64, copy=False).ravel()
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{who}: the observed values hold an inf or a NaN (a diverged activation?)")
    return a


class Observer:
    """What every observer shares: ``observe`` batches, then ``range`` and ``qparams``.

    Args:
        dtype: ``"int8"`` or ``"uint8"``, the storage type the range is for.
        symmetric: The symmetric scheme (else affine): see ``qparams``.
    """

    def __init__(self, dtype: str = "uint8", symmetric: bool = False):
        quant_range(dtype)
        self.dtype, self.symmetric = dtype, bool(symmetric)
        self.batches = 0

    def __call__(self, x):
        """Observe a batch and return it unchanged (so an observer can sit in a forward pass).

        Args:
            x: An array or a Tensor.

        Returns:
            ``x``.
        """
        self.observe(_values(x, type(self).__name__))
        self.batches += 1
        return x

    def observe(self, values: np.ndarray) -> None:
        """Take one batch's values into account (each observer defines it).

        Args:
            values: The batch's values, a flat finite float64 array.
        """
        raise NotImplementedError

    def range(self) -> tuple[float, float]:
        """The float range $[a, b]$ the observer settled on.

        Returns:
            ``(a, b)``.

        Raises:
            RuntimeError: Nothing observed yet.
        """
        if not self.batches:
            raise RuntimeError(f"{type(self).__name__}.range: no batch observed yet")
        return self._range()

    def qparams(self):
        """``choose_qparams`` of ``range()`` for this observer's dtype and scheme.

        Returns:
            ``(scale, zero_point)``, 0-d arrays.
        """
        a, b = self.range()
        return choose_qparams(a, b, self.dtype, self.symmetric)


class MinMaxObserver(Observer):
    """The smallest and the largest value seen (see the module).

    Args:
        dtype: ``"int8"`` or ``"uint8"``.
        symmetric: The symmetric scheme.
    """

    def __init__(self, dtype: str = "uint8", symmetric: bool = False):
        super().__init__(dtype, symmetric)
        self.min_val, self.max_val = np.inf, -np.inf

    def observe(self, values):
        """Widen the range to hold ``values``.

        Args:
            values: A flat float64 array.
        """
        self.min_val = min(self.min_val, float(values.min()))
        self.max_val = max(self.max_val, float(values.max()))

    def _range(self):
        return self.min_val, self.max_val


class PercentileObserver(Observer):
    r"""The $p$-th and $(100 - p)$-th percentiles, averaged over the batches (see the module).

    Args:
        percentile: $100 - p$, the upper percentile, in (50, 100] (99.99: clip one value in
            10,000 at each end).
        dtype: ``"int8"`` or ``"uint8"``.
        symmetric: The symmetric scheme.
    """

    def __init__(self, percentile: float = 99.99, dtype: str = "uint8", symmetric: bool = False):
        super().__init__(dtype, symmetric)
        if not 50 < percentile <= 100:
            raise ValueError(f"PercentileObserver: expected a percentile in (50, 100], got "
                             f"{percentile!r}")
        self.percentile = float(percentile)
        self.lows, self.highs = [], []

    def observe(self, values):
        """Record the batch's two percentiles.

        Args:
            values: A flat float64 array.
        """
        low, high = np.percentile(values, [100.0 - self.percentile, self.percentile])
        self.lows.append(float(low))
        self.highs.append(float(high))

    def _range(self):
        return float(np.mean(self.lows)), float(np.mean(self.highs))


class MSEObserver(Observer):
    r"""The range $[\alpha a, \alpha b]$ that minimises the squared quantization error.

    ``a`` and ``b`` are the min and max seen; the error is measured on a uniform sample of up
    to ``sample`` of the observed values (a reservoir, seeded), for ``alpha`` on a grid of
    ``steps`` values from ``1 / steps`` to 1.

    Args:
        dtype: ``"int8"`` or ``"uint8"``.
        symmetric: The symmetric scheme.
        steps: The grid's size.
        sample: The values kept.
        seed: The reservoir's seed.
    """

    def __init__(self, dtype: str = "uint8", symmetric: bool = False, steps: int = 100,
                 sample: int = 100_000, seed: int = 0):
        super().__init__(dtype, symmetric)
        if steps < 1 or sample < 1:
            raise ValueError(f"MSEObserver: expected steps >= 1 and sample >= 1, got {steps} "
                             f"and {sample}")
        self.steps, self.sample = int(steps), int(sample)
        self.rng = np.random.default_rng(seed)
        self.kept, self._keys = np.empty(0), np.empty(0)  # the sample and its random keys
        self.seen = 0
        self.minmax = MinMaxObserver(dtype, symmetric)

    def observe(self, values):
        """Widen the min/max and update the sample (each value seen kept with one chance).

        Args:
            values: A flat float64 array.
        """
        self.minmax.observe(values)
        # reservoir sampling, a batch at a time: every value gets a random key and the
        # ``sample`` smallest keys so far are kept, so each value seen is kept with the same
        # chance, whichever batch it came in
        pool = np.concatenate([self.kept, values])
        pool_keys = np.concatenate([self._keys, self.rng.random(values.size)])
        order = np.argsort(pool_keys)[:self.sample]
        self.kept, self._keys = pool[order], pool_keys[order]
        self.seen += values.size

    def error(self, alpha: float) -> float:
        """The mean squared quantization error of the sample with the range scaled by ``alpha``.

        Args:
            alpha: The scaling of the min/max range, in (0, 1].

        Returns:
            $\\overline{(x - \\hat x)^2}$.
        """
        qmin, qmax = quant_range(self.dtype)
        scale, zero = choose_qparams(alpha * self.minmax.min_val, alpha * self.minmax.max_val,
                                     self.dtype, self.symmetric)
        q = np.clip(np.rint(self.kept / scale) + zero, qmin, qmax)
        return float(np.mean((self.kept - (q - zero) * scale) ** 2))

    def _range(self):
        alphas = np.arange(1, self.steps + 1) / self.steps
        best = min(alphas, key=self.error)  # the first of equal errors: the smallest range
        return best * self.minmax.min_val, best * self.minmax.max_val
