r"""Softmax, cross-entropy, focal, multi-class hinge and Dice losses, and an explicit L2 penalty.

Each loss is one [Function][tinymbv2.autograd.Function] with a hand-derived backward
(the derivation is in its docstring), so the loss adds one node to the graph instead
of a dozen elementwise ones. Shapes: ``logits`` is ``(N, K)`` (N samples, K classes),
``target`` holds N integer class indices in ``[0, K)``. Cross-entropy and the Dice loss
also take a segmentation's ``(N, K, H, W)`` logits with ``(N, H, W)`` targets (one class
per pixel, ``ignore_index`` for pixels that count nowhere): each pixel is a sample, and
the class axis stays axis 1 (the softmax is then whole-plane passes, not sums along a short
last axis: 50 ms for the cross-entropy's forward and backward on (4, 21, 256, 256) float32
on 2 cores, against 200 ms with the class axis moved last; PyTorch 85-135 ms).

Numerical stability: every softmax-based loss works from
$\log p = z - \max(z) - \log \sum \exp(z - \max(z))$, so logits of magnitude 1e4 give
finite losses and gradients ($e^{10^4}$ would overflow).
"""
from __future__ import annotations

from numbers import Real

import numpy as np

from ..autograd import Function, Tensor
from ..backend import get_array_module
from ..kernels import kernels_for

__all__ = ["log_softmax", "softmax", "cross_entropy", "focal_loss", "multi_margin_loss", "dice_loss",
           "ce_dice_loss", "l2_penalty"]

REDUCTIONS = ("mean", "sum", "none")


# -- validation ----------------------------------------------------------------
def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def _check_float_tensor(fn: str, name: str, x, ndim=None):
    arr = _raw(x)
    if not hasattr(arr, "dtype") or not hasattr(arr, "shape"):
        raise TypeError(f"{fn}: {name} must be a Tensor or array, got {type(x).__name__}")
    if arr.dtype.kind != "f":
        raise TypeError(f"{fn}: {name} must be floating point, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got shape {tuple(arr.shape)}")
    return arr


def _target_indices(fn: str, target):
    """The array of class indices inside ``target`` (a Tensor, array, list or tuple) of integers."""
    t = _raw(target)
    if isinstance(t, (list, tuple)):
        t = np.asarray(t)
    if not hasattr(t, "dtype"):
        raise TypeError(f"{fn}: target must be an integer array or Tensor of class indices, "
                        f"got {type(target).__name__}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype {t.dtype}")
    return t


def _check_inputs(fn: str, logits, target):
    """Validate ``(N, K)`` float logits and ``(N,)`` integer targets in ``[0, K)``; return the target array."""
    z = _check_float_tensor(fn, "logits", logits, ndim=2)
    n, k = z.shape
    if n == 0 or k == 0:
        raise ValueError(f"{fn}: logits must have N >= 1 rows and K >= 1 classes, got shape {z.shape}")
    xp = get_array_module(z)
    t = _target_indices(fn, target)
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{fn}: target must have shape ({n},) to match logits {tuple(z.shape)}, "
                         f"got {tuple(t.shape)}")
    # One yes/no answer (for a target on the GPU: one device-to-host sync per call);
    # the offending value is looked up only to write the error.
    outside = (t < 0) | (t >= k)
    if bool(outside.any()):
        bad = int(t[outside][0])
        raise ValueError(f"{fn}: target values must be in [0, {k}) for {k} classes, got {bad}")
    return xp.asarray(t).astype(np.int64)


def _check_class_targets(fn: str, logits, target, ignore_index):
    """Validate ``(N, K)`` or ``(N, K, H, W)`` logits and their targets, ``(N,)`` or ``(N, H, W)``.

    Every target is a class in ``[0, K)`` or ``ignore_index``. Returns the targets as int64,
    of their shape.
    """
    z = _check_float_tensor(fn, "logits", logits)
    if z.ndim not in (2, 4):
        raise ValueError(f"{fn}: logits must be 2-D (N, K) or 4-D (N, K, H, W), "
                         f"got shape {tuple(z.shape)}")
    n, k = z.shape[:2]
    if z.size == 0:
        raise ValueError(f"{fn}: logits must not be empty, got shape {tuple(z.shape)}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{fn}: ignore_index must be an int, got {ignore_index!r}")
    xp = get_array_module(z)
    t = _target_indices(fn, target)
    want = (n,) + tuple(z.shape[2:])
    if tuple(t.shape) != want:
        raise ValueError(f"{fn}: target must have shape {want} to match logits {tuple(z.shape)}, "
                         f"got {tuple(t.shape)}")
    # one yes/no answer (one device-to-host sync for a target on the GPU), as _check_inputs
    outside = ((t < 0) | (t >= k)) & (t != ignore_index)
    if bool(outside.any()):
        bad = int(t[outside][0])
        raise ValueError(f"{fn}: target values must be in [0, {k}) for {k} classes, got {bad} "
                         f"(and it is not ignore_index={ignore_index})")
    return xp.asarray(t).astype(np.int64)


# The class axis stays axis 1 of (N, K, H, W): a softmax over it is then 21 whole-plane
# passes, about twice as fast in NumPy as the same sums along a short last axis of (N H W, K).
def _per_class(xp, v, ndim):
    """A (K,) vector shaped to broadcast along axis 1 of an ``ndim``-D array."""
    return v.reshape((-1,) + (1,) * (ndim - 2))


def _onehot(xp, t, k, dtype):
    """(N, ...) class indices -> (N, K, ...) one-hot of ``dtype``."""
    return (_per_class(xp, xp.arange(k), t.ndim + 1) == t[:, None]).astype(dtype)


def _check_reduction(fn: str, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _log_softmax(xp, z, axis):
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def reduce_losses(xp, losses, reduction: str):
    """Per-element losses summed, averaged or kept, as ``reduction`` says.

    Args:
        xp: NumPy or CuPy.
        losses: The per-element (or per-sample) losses.
        reduction: One of ``REDUCTIONS``: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A 0-d array of the losses' dtype, or ``losses`` itself for ``"none"``.
    """
    if reduction == "none":
        return losses
    # a 0-d array, not a NumPy scalar: np.float64 is a Python float, which Tensor() would
    # turn into float32
    return xp.asarray(losses.sum() if reduction == "sum" else losses.mean(), dtype=losses.dtype)


def _upstream(xp, grad, reduction, n):
    """The (N, 1) factor each row's gradient is scaled by."""
    if reduction == "none":
        return grad.reshape(n, 1)
    return grad / n if reduction == "mean" else grad


# -- softmax ----------------------------------------------------------------------
class LogSoftmax(Function):
    r"""$y = \log \text{softmax}(x) = x - \log \sum_j e^{x_j}$ along ``axis``; any shape.

    Backward: $\partial y_i / \partial x_j = \delta_{ij} - p_j$ with $p = e^y$, so
    $\partial L / \partial x = g - p \sum_i g_i$ (sums along ``axis``).

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        y = _log_softmax(get_array_module(x), x, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        xp = get_array_module(y)
        return grad - xp.exp(y) * grad.sum(axis=ctx.axis, keepdims=True)


class Softmax(Function):
    r"""$p_i = \text{softmax}(x)_i = e^{x_i - \max x} / \sum_j e^{x_j - \max x}$ along ``axis``.

    Any shape.

    Backward: $\partial p_i / \partial x_j = p_i (\delta_{ij} - p_j)$, so
    $\partial L / \partial x = p \odot (g - \sum_i g_i p_i)$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        xp = get_array_module(x)
        p = xp.exp(_log_softmax(xp, x, axis))
        ctx.save_for_backward(p)
        ctx.axis = axis
        return p

    @staticmethod
    def backward(ctx, grad):
        (p,) = ctx.saved_tensors
        return p * (grad - (grad * p).sum(axis=ctx.axis, keepdims=True))


def _check_axis(fn, x, axis):
    arr = _check_float_tensor(fn, "x", x)
    if arr.ndim == 0:
        raise ValueError(f"{fn}: x must have at least 1 dimension, got a 0-d array")
    if not isinstance(axis, (int, np.integer)) or not -arr.ndim <= axis < arr.ndim:
        raise ValueError(f"{fn}: axis must be an int in [-{arr.ndim}, {arr.ndim}), got {axis!r}")


def log_softmax(x, axis: int = -1) -> Tensor:
    r"""Log of the softmax along ``axis`` (stable: the max is subtracted first).

    Args:
        x: A floating Tensor, any shape.
        axis: The axis the softmax runs along.

    Returns:
        $\log \text{softmax}(x)$, of ``x``'s shape.
    """
    _check_axis("log_softmax", x, axis)
    return LogSoftmax.apply(x, axis=axis)


def softmax(x, axis: int = -1) -> Tensor:
    """Softmax along ``axis``: non-negative, sums to 1 (stable: the max is subtracted first).

    Args:
        x: A floating Tensor, any shape.
        axis: The axis the softmax runs along.

    Returns:
        The probabilities, of ``x``'s shape.
    """
    _check_axis("softmax", x, axis)
    return Softmax.apply(x, axis=axis)


# -- cross-entropy -------------------------------------------------------------
class CrossEntropy(Function):
    r"""Softmax cross-entropy with class weights, ignored targets and label smoothing, fused.

    Rows $i$ are samples, or pixels of (N, K, H, W) logits. With $\log p = \text{log_softmax}(z)$
    per row, class weights $w$ (all 1 by default), $m_i = [t_i \ne \text{ignore}]$ and
    label smoothing $\epsilon$ (Szegedy et al. 2016; the paper's recipe uses 0.1):

    $$
    \text{loss}_i = m_i \Big[(1 - \epsilon)\, w_{t_i} (-\log p_{i,t_i})
      + \frac{\epsilon}{K} \sum_k w_k (-\log p_{ik})\Big]
    $$

    and ``"mean"`` divides the sum by $\sum_i m_i w_{t_i}$, the weight of the counted rows
    (PyTorch's weighted mean; $N$ without weights or ignored rows). That is PyTorch's
    formula also for the smoothing term with weights: its smoothing term is
    $-\sum_k w_k \log p_k$ and its mean divides that term by the same sum. Without
    weights, $\text{loss}_i = -\sum_k q_{ik} \log p_{ik}$ with
    $q = (1 - \epsilon)\,\text{onehot}(t) + \epsilon / K$.

    Backward: $\partial(-\log p_k) / \partial z_j = p_j - \delta_{jk}$ gives
    $\partial \text{loss}_i / \partial z_i = m_i [(1 - \epsilon) w_{t_i} (p_i - e_{t_i})
    + \frac{\epsilon}{K} (p_i \sum_k w_k - w)]$ (without weights the classic $p - q$),
    scaled by the upstream gradient of row $i$ ($g_i$ for ``"none"``, $g$ divided by the
    mean's denominator for ``"mean"``, $g$ for ``"sum"``).

    readable: ``kernels/reference.py``, ``ReferenceKernels.cross_entropy_forward``,
    ``cross_entropy_backward`` (NumPy or CuPy).
    """

    @staticmethod
    def forward(ctx, z, target, weight=None, label_smoothing=0.0, reduction="mean",
                ignore_index=-100):
        xp = get_array_module(z)
        k = kernels_for(z)
        losses, w_t, p = k.cross_entropy_forward(z, target, weight, label_smoothing, ignore_index)
        ctx.save_for_backward(p, target, weight)
        ctx.kernels, ctx.eps, ctx.ignore = k, label_smoothing, ignore_index
        ctx.reduction = reduction
        if reduction == "none":
            return losses
        if reduction == "sum":
            return xp.asarray(losses.sum(), dtype=z.dtype)
        total = float(w_t.sum())
        ctx.total = total
        # every row ignored: 0 / 0, NaN as in PyTorch
        return xp.asarray(losses.sum() / total if total else np.nan, dtype=z.dtype)

    @staticmethod
    def backward(ctx, grad):
        p, target, weight = ctx.saved_tensors
        if ctx.reduction == "mean":
            scale = grad / ctx.total if ctx.total else 0.0 * grad
        else:  # "sum": one scale for every row; "none": one per row
            scale = grad
        return ctx.kernels.cross_entropy_backward(p, target, weight, ctx.eps, ctx.ignore,
                                                  scale), None, None


def cross_entropy(logits, target, label_smoothing: float = 0.0, reduction: str = "mean",
                  weight=None, ignore_index: int = -100) -> Tensor:
    r"""``torch.nn.functional.cross_entropy`` for class indices: per sample, or per pixel.

    Args:
        logits: $z$, the scores (N, K) of N samples over K classes, or (N, K, H, W): a
            segmentation's, K scores per pixel.
        target: The class indices $t$ in [0, K) (or ``ignore_index``): an integer array or
            Tensor, (N,) or (N, H, W).
        label_smoothing: $\epsilon$ in [0, 1]: the target puts $1 - \epsilon + \epsilon / K$ on
            the true class and $\epsilon / K$ on each other one.
        reduction: ``"mean"`` (the weighted mean over the counted samples or pixels: divided
            by the sum of their classes' weights), ``"sum"`` or ``"none"`` (one loss per
            sample or pixel, 0 where ignored).
        weight: None, or the K class weights $w$ (a float array, Tensor or sequence, not
            differentiated): class $t$'s loss is multiplied by $w_t$ (rare classes count more).
        ignore_index: A target value that counts nowhere: neither in the loss nor in the
            mean's denominator (PyTorch's default, -100; segmentation datasets mark unlabelled
            pixels with one, such as 255 for PASCAL VOC's borders). A ``"mean"`` over only
            ignored targets is NaN, as PyTorch's.

    Returns:
        A scalar Tensor (``"mean"``, ``"sum"``) or a Tensor of the target's shape (``"none"``).

    Raises:
        TypeError: Logits that are not a floating Tensor, targets that are not integers, a
            weight that is not floating, or an ``ignore_index`` that is not an int.
        ValueError: Logits neither 2-D nor 4-D, a target shape that does not fit, a class
            index outside [0, K) that is not ``ignore_index``, a weight of another length, or
            an unknown reduction or label smoothing.
    """
    fn = "cross_entropy"
    t = _check_class_targets(fn, logits, target, ignore_index)
    _check_reduction(fn, reduction)
    if not isinstance(label_smoothing, Real) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    w = None if weight is None else _check_class_weight(fn, logits, weight)
    return CrossEntropy.apply(logits, t, weight=w, label_smoothing=float(label_smoothing),
                              reduction=reduction, ignore_index=int(ignore_index))


def _check_class_weight(fn: str, logits, weight):
    """The K class weights as an array of the logits' dtype and device."""
    z = _raw(logits)
    if isinstance(weight, (list, tuple)):
        weight = np.asarray(weight, dtype=float)
    w = _check_float_tensor(fn, "weight", weight)
    if tuple(w.shape) != (z.shape[1],):
        raise ValueError(f"{fn}: weight must have shape ({z.shape[1]},), one per class of logits "
                         f"{tuple(z.shape)}, got {tuple(w.shape)}")
    return get_array_module(z).asarray(w, dtype=z.dtype)


# -- focal loss -----------------------------------------------------------------
class FocalLoss(Function):
    r"""Multi-class focal loss (Lin et al. 2017): $\text{loss}_n = -a_n (1 - p_n)^\gamma \log p_n$.

    $p_n = \text{softmax}(z_n)_{t_n}$ is the probability of the true class and $a_n$ its
    alpha. Easy examples ($p_n$ near 1) are down-weighted by $(1 - p_n)^\gamma$; $\gamma = 0$
    is (alpha-weighted) cross-entropy.

    Backward, with $l = \log p_n$ and $u = 1 - p_n$ (computed as ``-expm1(l)``, accurate
    near $p = 1$):
    $\partial \text{loss} / \partial l = a (\gamma p u^{\gamma-1} l - u^\gamma)$ and
    $\partial l / \partial z_j = \delta_{j,t} - p_j$, so
    $\partial \text{loss} / \partial z =
    \partial \text{loss} / \partial l \cdot (\text{onehot}(t) - \text{softmax}(z))$.
    Where $u = 0$ the first term is taken at its limit 0 ($p u^{\gamma-1} l \approx -u^\gamma$),
    avoiding $0 \cdot \infty$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, z, target, alpha_t, gamma=2.0, reduction="mean"):
        xp = get_array_module(z)
        n = z.shape[0]
        logp = _log_softmax(xp, z, 1)
        lt = logp[xp.arange(n), target]
        u = -xp.expm1(lt)
        losses = -alpha_t * u ** gamma * lt
        ctx.save_for_backward(logp, target, alpha_t)
        ctx.gamma, ctx.reduction = gamma, reduction
        return reduce_losses(xp, losses, reduction)

    @staticmethod
    def backward(ctx, grad):
        logp, target, alpha_t = ctx.saved_tensors
        xp = get_array_module(logp)
        n = logp.shape[0]
        gamma = ctx.gamma
        lt = logp[xp.arange(n), target]
        pt, u = xp.exp(lt), -xp.expm1(lt)
        if gamma == 0:
            first = xp.zeros_like(u)
        else:
            safe_u = xp.where(u > 0, u, 1.0)
            first = xp.where(u > 0, gamma * pt * safe_u ** (gamma - 1) * lt, 0.0)
        dl = alpha_t * (first - u ** gamma)                      # dloss_n / dlog p_n
        dz = -xp.exp(logp)
        dz[xp.arange(n), target] += 1.0
        return dz * (dl[:, None] * _upstream(xp, grad, ctx.reduction, n)), None, None


def focal_loss(logits, target, gamma: float = 2.0, alpha=None, reduction: str = "mean") -> Tensor:
    r"""Softmax focal loss for ``(N, K)`` logits and ``(N,)`` class indices.

    Args:
        logits: $z$, the scores (N, K) of N samples over K classes.
        target: The N class indices $t_n$ in [0, K): an integer array or Tensor (N,).
        gamma: $\gamma \ge 0$, how strongly easy examples are down-weighted (0: cross-entropy).
        alpha: ``None`` (1 for every class), a float (the same weight for every class, which
            only rescales the loss), or a length-K sequence or array of per-class weights
            ($a_n = \alpha_{t_n}$).
        reduction: ``"mean"`` (divides by N, not by the sum of the alphas), ``"sum"`` or
            ``"none"``.

    Returns:
        A scalar Tensor (``"mean"``, ``"sum"``) or an ``(N,)`` Tensor (``"none"``).

    Raises:
        TypeError: Logits that are not a floating Tensor, or targets that are not integers.
        ValueError: A shape that does not fit, a class index outside [0, K), ``gamma < 0``,
            an ``alpha`` of another length, or an unknown reduction.
    """
    t = _check_inputs("focal_loss", logits, target)
    _check_reduction("focal_loss", reduction)
    z = _raw(logits)
    xp = get_array_module(z)
    n, k = z.shape
    if not isinstance(gamma, Real) or gamma < 0:
        raise ValueError(f"focal_loss: gamma must be a number >= 0, got {gamma!r}")
    if alpha is None:
        alpha_t = xp.ones(n, dtype=z.dtype)
    elif isinstance(alpha, Real):
        alpha_t = xp.full(n, float(alpha), dtype=z.dtype)
    else:
        a = xp.asarray(_raw(alpha), dtype=z.dtype)
        if a.shape != (k,):
            raise ValueError(f"focal_loss: alpha must be None, a float or a sequence of {k} "
                             f"per-class weights, got shape {tuple(a.shape)}")
        alpha_t = a[t]
    return FocalLoss.apply(logits, t, alpha_t, gamma=float(gamma), reduction=reduction)


# -- multi-class hinge loss --------------------------------------------------------
class MultiMarginLoss(Function):
    r"""Multi-class hinge loss (Weston and Watkins 1999), PyTorch's ``multi_margin_loss``.

    With the margin $m$ and the power $p \in \{1, 2\}$, each wrong class $j \ne t_n$ whose
    score comes within $m$ of the true one pays:

    $$
    \text{loss}_n = \frac1K \sum_{j \ne t_n} \max(0,\; m - z_{n,t_n} + z_{nj})^p
    $$

    Backward, with the hinge $h_{nj} = \max(0, m - z_{n,t_n} + z_{nj})$ for $j \ne t_n$:
    $\partial \text{loss}_n / \partial z_{nj} = p\,h_{nj}^{p-1} [h_{nj} > 0] / K$, and the true
    class gets minus their sum (it appears in every hinge with sign $-1$), scaled by the
    upstream gradient of row $n$ as in [CrossEntropy][tinymbv2.functional.losses.CrossEntropy].

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, z, target, margin=1.0, p=1, reduction="mean"):
        xp = get_array_module(z)
        n, k = z.shape
        rows = xp.arange(n)
        hinge = xp.maximum(0.0, margin - z[rows, target][:, None] + z)
        hinge[rows, target] = 0.0                 # the true class is not its own rival
        losses = (hinge ** p).sum(axis=1) / k
        ctx.save_for_backward(hinge, target)
        ctx.p, ctx.reduction = p, reduction
        return reduce_losses(xp, losses, reduction)

    @staticmethod
    def backward(ctx, grad):
        hinge, target = ctx.saved_tensors
        xp = get_array_module(hinge)
        n, k = hinge.shape
        # d/dh of h^p: 1 where h > 0 (p = 1), 2h (p = 2); the hinge's kink at 0 takes 0, as torch
        dz = (hinge > 0).astype(hinge.dtype) if ctx.p == 1 else 2.0 * hinge
        dz /= k
        dz[xp.arange(n), target] = -dz.sum(axis=1)
        return dz * _upstream(xp, grad, ctx.reduction, n), None


def multi_margin_loss(logits, target, p: int = 1, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    r"""``torch.nn.functional.multi_margin_loss``: the linear SVM's hinge loss over K classes.

    Args:
        logits: $z$, the scores (N, K) of N samples over K classes.
        target: The N class indices $t_n$ in [0, K): an integer array or Tensor (N,).
        p: 1 (the hinge) or 2 (the squared hinge, which LinearSVC minimises by default).
        margin: $m > 0$, how far above every other score the true class's score must be.
        reduction: ``"mean"`` (over the N samples), ``"sum"`` or ``"none"`` (one loss per sample).

    Returns:
        A scalar Tensor (``"mean"``, ``"sum"``) or an ``(N,)`` Tensor (``"none"``):
        $\frac1K \sum_{j \ne t} \max(0, m - z_t + z_j)^p$ per sample.

    Raises:
        TypeError: Logits that are not a floating Tensor, or targets that are not integers.
        ValueError: A shape that does not fit, a class index outside [0, K), a ``p`` other
            than 1 or 2, a margin that is not positive, or an unknown reduction.
    """
    t = _check_inputs("multi_margin_loss", logits, target)
    _check_reduction("multi_margin_loss", reduction)
    if p not in (1, 2):
        raise ValueError(f"multi_margin_loss: p must be 1 or 2, got {p!r}")
    if not isinstance(margin, Real) or not margin > 0:
        raise ValueError(f"multi_margin_loss: margin must be a number > 0, got {margin!r}")
    return MultiMarginLoss.apply(logits, t, margin=float(margin), p=int(p), reduction=reduction)


# -- Dice loss ------------------------------------------------------------------
class DiceLoss(Function):
    r"""Soft Dice loss over softmax probabilities: $1 - \text{mean}_k\,\text{dice}_k$ (a scalar).

    Rows $i$ are samples, or the pixels of the whole batch for (N, K, H, W) logits. With
    $p = \text{softmax}(z)$ and $g = \text{onehot}(t)$, both (rows, K), and $m_i = 0$ for
    rows whose target is ``ignore_index`` (1 otherwise), per class $k$:
    $I_k = \sum_i m_i p_{ik} g_{ik}$, $D_k = \sum_i m_i p_{ik} + \sum_i m_i g_{ik} + s$,
    $\text{dice}_k = (2 I_k + s) / D_k$. The smoothing $s$ keeps a class absent from the
    batch ($\sum g = 0$) finite. If $s = 0$ and $D_k = 0$ the class counts as a perfect
    match (dice 1, gradient 0).

    Backward: $\partial\,\text{dice}_k / \partial p_{ik} = m_i (2 g_{ik} - \text{dice}_k) / D_k$,
    so $\partial L / \partial p_{ik} = -m_i (2 g_{ik} - \text{dice}_k) / (K D_k)$; then through
    the softmax, row-wise,
    $\partial L / \partial z = p \odot (\partial L / \partial p -
    \sum_k p_k\,\partial L / \partial p_k)$ (0 on ignored rows).

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, z, target, smooth=1.0, ignore_index=-100):
        xp = get_array_module(z)
        k = z.shape[1]
        axes = (0,) + tuple(range(2, z.ndim))                 # all but the class axis
        p = xp.exp(_log_softmax(xp, z, 1))
        keep = (target != ignore_index)[:, None].astype(z.dtype)
        g = _onehot(xp, xp.where(target != ignore_index, target, 0), k, z.dtype) * keep
        inter = (p * g).sum(axis=axes)
        denom = (p * keep).sum(axis=axes) + g.sum(axis=axes) + smooth
        empty = denom == 0
        safe = xp.where(empty, 1.0, denom)
        dice = xp.where(empty, 1.0, (2.0 * inter + smooth) / safe)
        ctx.save_for_backward(p, g, keep, dice, safe, empty)
        return xp.asarray(1.0 - dice.mean(), dtype=z.dtype)

    @staticmethod
    def backward(ctx, grad):
        p, g, keep, dice, safe, empty = ctx.saved_tensors
        xp = get_array_module(p)
        k = p.shape[1]
        coef = xp.where(empty, 0.0, 1.0 / (k * safe)) * grad  # (K,)
        dp = (_per_class(xp, dice * coef, p.ndim) - 2.0 * g * _per_class(xp, coef, p.ndim)) * keep
        return p * (dp - (dp * p).sum(axis=1, keepdims=True)), None


def dice_loss(logits, target, smooth: float = 1.0, ignore_index: int = -100) -> Tensor:
    r"""Soft multi-class Dice loss (a scalar Tensor): per sample, or per pixel for segmentation.

    For (N, K, H, W) logits each class's overlap and sizes are summed over all the pixels
    of the batch (one Dice per class for the batch, then their mean): the loss that
    measures a mask's overlap directly, so a class that covers few pixels weighs as much
    as the background. For single-label classification ((N, K) logits) it is a weak
    training signal next to cross-entropy (its gradient vanishes as soon as the
    batch-level overlap is good); the course shows that rather than hiding it.

    Args:
        logits: $z$, the scores (N, K) of N samples over K classes, or (N, K, H, W).
        target: The class indices $t$ in [0, K) (or ``ignore_index``): an integer array or
            Tensor, (N,) or (N, H, W).
        smooth: $s \ge 0$, added to the overlap and the sizes.
        ignore_index: A target value whose samples or pixels count nowhere (neither in
            $p$ nor in $g$); PyTorch's cross-entropy default, -100.

    Returns:
        The loss, a scalar Tensor.

    Raises:
        TypeError: Logits that are not a floating Tensor, targets that are not integers, or
            an ``ignore_index`` that is not an int.
        ValueError: Logits neither 2-D nor 4-D, a target shape that does not fit, a class
            index outside [0, K) that is not ``ignore_index``, or ``smooth < 0``.
    """
    t = _check_class_targets("dice_loss", logits, target, ignore_index)
    if not isinstance(smooth, Real) or smooth < 0:
        raise ValueError(f"dice_loss: smooth must be a number >= 0, got {smooth!r}")
    return DiceLoss.apply(logits, t, smooth=float(smooth), ignore_index=int(ignore_index))


def ce_dice_loss(logits, target, ce_weight: float = 1.0, dice_weight: float = 1.0,
                 weight=None, ignore_index: int = -100, smooth: float = 1.0,
                 label_smoothing: float = 0.0) -> Tensor:
    r"""Cross-entropy plus Dice, the usual segmentation loss: $a\,\text{CE} + b\,\text{Dice}$.

    Cross-entropy gives every pixel a gradient from the first step; the Dice term
    measures each class's overlap, so classes that cover few pixels are not drowned by the
    background. Both as [cross_entropy][tinymbv2.functional.losses.cross_entropy] (its
    mean) and [dice_loss][tinymbv2.functional.losses.dice_loss] define them, with the same
    ignored targets.

    Args:
        logits: $z$, (N, K) or (N, K, H, W).
        target: The class indices, (N,) or (N, H, W), in [0, K) or ``ignore_index``.
        ce_weight: $a \ge 0$, the cross-entropy's weight.
        dice_weight: $b \ge 0$, the Dice loss's weight.
        weight: None, or the K class weights of the cross-entropy.
        ignore_index: A target value that counts in neither term.
        smooth: The Dice loss's $s$.
        label_smoothing: The cross-entropy's $\epsilon$.

    Returns:
        The loss, a scalar Tensor.

    Raises:
        TypeError: As the two losses.
        ValueError: As the two losses, or a negative ``ce_weight`` or ``dice_weight``.
    """
    for name, value in (("ce_weight", ce_weight), ("dice_weight", dice_weight)):
        if isinstance(value, bool) or not isinstance(value, Real) or value < 0:
            raise ValueError(f"ce_dice_loss: {name} must be a number >= 0, got {value!r}")
    ce = cross_entropy(logits, target, label_smoothing=label_smoothing, weight=weight,
                       ignore_index=ignore_index)
    dice = dice_loss(logits, target, smooth=smooth, ignore_index=ignore_index)
    return ce * float(ce_weight) + dice * float(dice_weight)


# -- explicit L2 penalty ---------------------------------------------------------
class L2Penalty(Function):
    r"""$\lambda \sum_i \lVert W_i \rVert^2$ over any number of arrays.

    Backward: $\partial / \partial W_i = 2 \lambda W_i$.

    readable: this class (NumPy or CuPy, no kernel).
    """

    @staticmethod
    def forward(ctx, *weights, lam=0.0):
        xp = get_array_module(*weights)
        ctx.save_for_backward(*weights)
        ctx.lam = lam
        total = sum(xp.sum(w * w) for w in weights)
        return xp.asarray(lam * total, dtype=weights[0].dtype)

    @staticmethod
    def backward(ctx, grad):
        return tuple(2.0 * ctx.lam * grad * w for w in ctx.saved_tensors)


def l2_penalty(params, lam: float) -> Tensor:
    r"""$\lambda \sum_W \lVert W \rVert^2$ as a scalar Tensor to add to the loss (explicit L2).

    ``loss = cross_entropy(model(x), y) + l2_penalty(model.parameters(), 4e-5)``. This is the
    seed article's $\lambda \lVert W \rVert^2$ term done right. Its gradient is $2 \lambda W$,
    which enters the optimizer *with* the data gradient, and that is how it differs from an
    optimizer's ``weight_decay``:

    * **plain SGD** (no momentum): ``p -= lr * (g + 2 * lam * W)`` is exactly
      ``SGD(weight_decay=2 * lam)``. With momentum they also agree, since SGD adds
      ``wd * p`` to the gradient before the buffer.
    * **RMSprop / Adam**: the penalty gradient is divided by the adaptive denominator
      $\sqrt{v}$ like the rest of the gradient, so weights with large gradients are decayed
      less and the effective decay is not $2 \lambda$. ``Adam(weight_decay=2 * lam)`` is still
      the same as this penalty (it too adds ``wd * p`` to the gradient), only the meaning
      changes.
    * **AdamW** (and ``RMSpropTF(decoupled_decay=True)``) *decouple* the decay:
      ``p *= 1 - lr * wd`` outside the adaptive step, so every weight shrinks at the same
      rate; no penalty term in the loss reproduces that.

    Penalising BatchNorm scales/shifts and biases is usually a mistake (it fights the
    normalisation); pass only the convolution and linear weights.

    Args:
        params: An iterable of Tensors (e.g. the weights to regularise), or one Tensor.
        lam: $\lambda$, the coefficient, >= 0.

    Returns:
        The penalty, a scalar Tensor.

    Raises:
        TypeError: An entry is not a floating Tensor.
        ValueError: ``lam < 0``, or no parameters.
    """
    if not isinstance(lam, Real) or lam < 0:
        raise ValueError(f"l2_penalty: lam must be a number >= 0, got {lam!r}")
    if isinstance(params, Tensor):
        params = [params]
    weights = list(params)
    if not weights:
        raise ValueError("l2_penalty: got an empty list of parameters")
    for i, w in enumerate(weights):
        if not isinstance(w, Tensor):
            raise TypeError(f"l2_penalty: params[{i}] must be a Tensor, got {type(w).__name__}")
        _check_float_tensor("l2_penalty", f"params[{i}]", w)
    return L2Penalty.apply(*weights, lam=float(lam))
