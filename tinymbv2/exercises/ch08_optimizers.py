"""Checks for the exercises of chapter 8. Optimizers and learning-rate schedules.

* [check_rmsprop_step][tinymbv2.exercises.ch08_optimizers.check_rmsprop_step]: one step of
  PyTorch's RMSprop (no momentum), against ``optim.RMSprop``;
* [check_adam_step][tinymbv2.exercises.ch08_optimizers.check_adam_step]: one step of Adam,
  against ``optim.Adam``;
* [check_warmup_cosine][tinymbv2.exercises.ch08_optimizers.check_warmup_cosine]: a linear
  warm-up followed by a cosine decay, against ``SequentialLR(LinearLR, CosineAnnealingLR)``;
* [check_rmsprop_tf_step][tinymbv2.exercises.ch08_optimizers.check_rmsprop_tf_step]: one
  step of TensorFlow's RMSprop with momentum (the paper's optimizer), against
  ``optim.RMSpropTF``.

An optimizer check runs several steps from seeded random weights and gradients (one gradient
holds a zero, one case has a large eps, where its place matters), feeding each step the
library's state so that one wrong step is reported once. The usual slips get a hint of their
own: (1 - alpha) forgotten, eps inside the square root, the old v used, no bias correction,
t counted from 0, the warm-up starting at 0, the cosine spread over all the steps, eps
outside TensorFlow's square root, the learning rate outside its momentum buffer.
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn, optim
from ..optim import lr_scheduler
from .checking import Hint, exercise, expect_close

__all__ = ["check_rmsprop_step", "check_adam_step", "check_warmup_cosine", "check_rmsprop_tf_step"]


def _arrays(got, count: int, names: str, what: str) -> list[np.ndarray]:
    """The learner's returned tuple as float arrays, or a hint naming what was expected."""
    if not isinstance(got, (tuple, list)) or len(got) != count:
        size = f" of {len(got)}" if isinstance(got, (tuple, list)) else ""
        raise Hint(f"{what}: return the tuple ({names}), got a {type(got).__name__}{size}")
    return [np.asarray(getattr(a, "data", a), dtype=np.float64) for a in got]


def _library_steps(make, w0: np.ndarray, grads: list[np.ndarray]):
    """[(weights, state)] after each step of the library optimizer ``make([param])``."""
    p = nn.Parameter(w0.copy())
    opt = make([p])
    out = []
    for g in grads:
        p.grad = g.copy()
        opt.step()
        state = {k: v.copy() for k, v in opt.state[id(p)].items() if isinstance(v, np.ndarray)}
        out.append((p.data.copy(), state, opt.state[id(p)]["step"]))
    return out


def _gradients(rng, shape, steps: int) -> list[np.ndarray]:
    """Seeded random gradients of mixed scales; the first holds a zero entry."""
    grads = [rng.standard_normal(shape) * rng.choice([0.01, 0.1, 1.0]) for _ in range(steps)]
    grads[0].flat[0] = 0.0
    return grads


def _match(got, value, expected) -> bool:
    """``got`` equals a slip's ``value`` that differs from the right ``expected``."""
    return (np.shape(got) == np.shape(value) and np.allclose(got, value, rtol=1e-9, atol=1e-12)
            and not np.allclose(value, expected, rtol=1e-9, atol=1e-12))


RMSPROP_CASES = [((5,), 0.01, 0.99, 1e-8, 4), ((3, 4), 0.1, 0.9, 0.1, 3), ((2,), 0.001, 0.5, 1e-3, 3)]


@exercise
def check_rmsprop_step(answer):
    """Check ``answer(w, g, v, lr, alpha, eps)`` -> ``(w_new, v_new)``, one step of PyTorch's
    RMSprop: $v \\leftarrow \\alpha v + (1-\\alpha) g^2$,
    $w \\leftarrow w - \\eta\\, g / (\\sqrt{v} + \\epsilon)$, with v starting at 0.

    Cases: three (shape, lr, alpha, eps) settings, 3-4 steps each, against ``optim.RMSprop``
    (no momentum, no weight decay).

    Args:
        answer: the learner's ``rmsprop_step(w, g, v, lr, alpha, eps)``.

    Returns:
        The number of steps checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    rng = np.random.default_rng(8)
    count = 0
    for shape, lr, alpha, eps, steps in RMSPROP_CASES:
        w0, grads = rng.standard_normal(shape), _gradients(rng, shape, steps)
        expected = _library_steps(lambda ps: optim.RMSprop(ps, lr=lr, alpha=alpha, eps=eps), w0, grads)
        w, v = w0, np.zeros(shape)
        for i, (g, (w_right, state, _)) in enumerate(zip(grads, expected)):
            count += 1
            what = f"step {i + 1}, shape {shape}, lr={lr}, alpha={alpha}, eps={eps}"
            w_got, v_got = _arrays(answer(w.copy(), g.copy(), v.copy(), lr, alpha, eps), 2, "w, v", what)
            v_right = state["square_avg"]
            v_slips = {"the running mean is alpha v + (1 - alpha) g^2: the new g^2 enters with "
                       "weight 1 - alpha": alpha * v + g * g,
                       "alpha weights the old v, 1 - alpha the new g^2": (1 - alpha) * v + alpha * g * g}
            for hint, value in v_slips.items():
                if _match(v_got, value, v_right):
                    raise Hint(f"{what}: v: {hint}")
            expect_close(v_got, v_right, f"{what}: v", rtol=1e-9, atol=1e-12)
            w_slips = {f"eps = {eps} goes outside the square root, sqrt(v) + eps (inside is "
                       "TensorFlow's form)": w - lr * g / np.sqrt(v_right + eps),
                       "divide by the new v, the one that already holds this step's g^2":
                           w - lr * g / (np.sqrt(v) + eps),
                       "divide by the root of v, sqrt(v) + eps": w - lr * g / (v_right + eps),
                       "step against the gradient: w - lr * g / (sqrt(v) + eps)":
                           w + lr * g / (np.sqrt(v_right) + eps)}
            for hint, value in w_slips.items():
                if _match(w_got, value, w_right):
                    raise Hint(f"{what}: w: {hint}")
            expect_close(w_got, w_right, f"{what}: w", rtol=1e-9, atol=1e-12)
            w, v = w_right, v_right
    return count


ADAM_CASES = [((4,), 0.1, (0.9, 0.999), 1e-8, 4), ((2, 3), 0.01, (0.8, 0.9), 0.1, 3),
              ((3,), 0.5, (0.5, 0.99), 1e-8, 3)]


@exercise
def check_adam_step(answer):
    """Check ``answer(w, g, m, v, t, lr, beta1, beta2, eps)`` -> ``(w_new, m_new, v_new)``,
    step number ``t`` (1 at the first step) of Adam:
    $m \\leftarrow \\beta_1 m + (1-\\beta_1) g$, $v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2$,
    $w \\leftarrow w - \\eta\\,\\hat m / (\\sqrt{\\hat v} + \\epsilon)$ with
    $\\hat m = m / (1-\\beta_1^t)$, $\\hat v = v / (1-\\beta_2^t)$.

    Cases: three (shape, lr, betas, eps) settings, 3-4 steps each, against ``optim.Adam``.

    Args:
        answer: the learner's ``adam_step(w, g, m, v, t, lr, beta1, beta2, eps)``.

    Returns:
        The number of steps checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    rng = np.random.default_rng(9)
    count = 0
    for shape, lr, (b1, b2), eps, steps in ADAM_CASES:
        w0, grads = rng.standard_normal(shape), _gradients(rng, shape, steps)
        expected = _library_steps(lambda ps: optim.Adam(ps, lr=lr, betas=(b1, b2), eps=eps), w0, grads)
        w, m, v = w0, np.zeros(shape), np.zeros(shape)
        for g, (w_right, state, t) in zip(grads, expected):
            count += 1
            what = f"step t={t}, shape {shape}, lr={lr}, betas=({b1}, {b2}), eps={eps}"
            got = answer(w.copy(), g.copy(), m.copy(), v.copy(), t, lr, b1, b2, eps)
            w_got, m_got, v_got = _arrays(got, 3, "w, m, v", what)
            m_right, v_right = state["exp_avg"], state["exp_avg_sq"]
            if _match(m_got, b1 * m + g, m_right):
                raise Hint(f"{what}: m: the new g enters with weight 1 - beta1")
            expect_close(m_got, m_right, f"{what}: m", rtol=1e-9, atol=1e-12)
            if _match(v_got, b2 * v + (1 - b2) * g, v_right):
                raise Hint(f"{what}: v: v averages the squared gradient, g^2")
            if _match(v_got, b2 * v + g * g, v_right):
                raise Hint(f"{what}: v: the new g^2 enters with weight 1 - beta2")
            expect_close(v_got, v_right, f"{what}: v", rtol=1e-9, atol=1e-12)
            def stepped(tt, inside=False):  # Adam's w update at step number tt
                v_hat = v_right / (1 - b2 ** tt)
                denom = np.sqrt(v_hat + eps) if inside else np.sqrt(v_hat) + eps
                return w - lr * (m_right / (1 - b1 ** tt)) / denom

            counted = f"t counts the steps from 1: this is step t = {t}"
            w_slips = [
                ("divide m by 1 - beta1^t and v by 1 - beta2^t (the bias correction): both "
                 "start at 0, so without it the first steps are far too small",
                 w - lr * m_right / (np.sqrt(v_right) + eps)),
                (counted, stepped(t + 1)),
                (counted, stepped(t - 1) if t > 1 else None),
                (f"eps = {eps} goes outside the square root: sqrt(v_hat) + eps",
                 stepped(t, inside=True)),
            ]
            for hint, value in w_slips:
                if value is not None and _match(w_got, value, w_right):
                    raise Hint(f"{what}: w: {hint}")
            if t == 1 and not np.all(np.isfinite(w_got)):
                raise Hint(f"{what}: w has non-finite values: a bias correction 1 - beta^0 = 0? "
                           "t counts the steps from 1")
            expect_close(w_got, w_right, f"{what}: w", rtol=1e-9, atol=1e-12)
            w, m, v = w_right, m_right, v_right
    return count


def _library_schedule(total: int, warmup: int, base_lr: float) -> np.ndarray:
    """The lr at steps 0 .. total - 1 of ``SequentialLR([LinearLR(start_factor=1/warmup,
    total_iters=warmup - 1), CosineAnnealingLR(T_max=total - warmup)], milestones=[warmup])``."""
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=base_lr)
    sched = lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, start_factor=1 / warmup, total_iters=warmup - 1),
              lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup)], milestones=[warmup])
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


@exercise
def check_warmup_cosine(answer):
    """Check ``answer(step, total_steps, warmup_steps, base_lr)`` -> the learning rate at
    ``step`` (0-based): ``base_lr * (step + 1) / warmup_steps`` during the warm-up, then
    ``base_lr * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps))) / 2``.

    Cases: every step of four schedules (100 steps with 10 of warm-up, 20 with 5, 7 with 2,
    1000 with 50), against the library's ``SequentialLR`` of a ``LinearLR`` and a
    ``CosineAnnealingLR`` (the usual PyTorch recipe).

    Args:
        answer: the learner's ``warmup_cosine(step, total_steps, warmup_steps, base_lr)``.

    Returns:
        The number of steps checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    count = 0
    for total, warmup, base in ((100, 10, 0.1), (20, 5, 0.5), (7, 2, 1.0), (1000, 50, 0.045)):
        expected = _library_schedule(total, warmup, base)
        for step, right in enumerate(expected):
            count += 1
            what = f"warmup_cosine({step}, {total}, {warmup}, {base})"
            try:
                got = float(answer(step, total, warmup, base))
            except (TypeError, ValueError):
                raise Hint(f"{what}: expected a number (the learning rate)") from None
            if math.isclose(got, right, rel_tol=1e-9, abs_tol=1e-15):
                continue
            wrong = f"{what}: you gave {got:.6g}, expected {right:.6g}"
            if step < warmup and math.isclose(got, base * step / warmup, rel_tol=1e-9):
                raise Hint(f"{wrong}: step 0 already trains: the warm-up gives base_lr * (step + 1)"
                           " / warmup_steps, reaching base_lr at step warmup_steps - 1")
            if step >= warmup and any(math.isclose(got, base * (1 + math.cos(math.pi * a / total)) / 2,
                                                   rel_tol=1e-9) for a in (step, step - warmup)):
                raise Hint(f"{wrong}: the cosine runs over the total_steps - warmup_steps = "
                           f"{total - warmup} steps after the warm-up, from its peak at step "
                           f"warmup_steps = {warmup}")
            raise Hint(wrong + (" (in the warm-up)" if step < warmup else " (in the cosine decay)"))
    return count


RMSPROP_TF_CASES = [((5,), 0.045, 0.9, 0.9, 1.0, 4), ((3, 4), 0.01, 0.9, 0.5, 1e-3, 3),
                    ((2,), 0.1, 0.99, 0.9, 1e-10, 3)]


@exercise
def check_rmsprop_tf_step(answer):
    """Check ``answer(w, g, ms, mom, lr, alpha, momentum, eps)`` -> ``(w_new, ms_new, mom_new)``,
    one step of TensorFlow's RMSprop with momentum:
    $\\text{ms} \\leftarrow \\alpha\\,\\text{ms} + (1-\\alpha) g^2$,
    $\\text{mom} \\leftarrow \\mu\\,\\text{mom} + \\eta\\, g / \\sqrt{\\text{ms} + \\epsilon}$,
    $w \\leftarrow w - \\text{mom}$, with ms starting at 1 and mom at 0.

    Cases: three (shape, lr, alpha, momentum, eps) settings, 3-4 steps each (the paper's
    0.045, 0.9, 0.9 with TF-slim's eps 1.0 among them), against ``optim.RMSpropTF``.

    Args:
        answer: the learner's ``rmsprop_tf_step(w, g, ms, mom, lr, alpha, momentum, eps)``.

    Returns:
        The number of steps checked; the ``exercise`` decorator turns it into an ``Outcome``
        (``correct``, or ``not yet:`` and the hint of the first wrong case).
    """
    rng = np.random.default_rng(10)
    count = 0
    for shape, lr, alpha, mu, eps, steps in RMSPROP_TF_CASES:
        w0, grads = rng.standard_normal(shape), _gradients(rng, shape, steps)
        expected = _library_steps(lambda ps: optim.RMSpropTF(ps, lr=lr, alpha=alpha, momentum=mu,
                                                             eps=eps), w0, grads)
        w, ms, mom = w0, np.ones(shape), np.zeros(shape)
        for i, (g, (w_right, state, _)) in enumerate(zip(grads, expected)):
            count += 1
            what = f"step {i + 1}, shape {shape}, lr={lr}, alpha={alpha}, momentum={mu}, eps={eps}"
            got = answer(w.copy(), g.copy(), ms.copy(), mom.copy(), lr, alpha, mu, eps)
            w_got, ms_got, mom_got = _arrays(got, 3, "w, ms, mom", what)
            ms_right, mom_right = state["square_avg"], state["momentum_buffer"]
            ms_slips = {"the running mean is alpha ms + (1 - alpha) g^2: the new g^2 enters "
                        "with weight 1 - alpha": alpha * ms + g * g,
                        "alpha weights the old ms, 1 - alpha the new g^2":
                            (1 - alpha) * ms + alpha * g * g}
            for hint, value in ms_slips.items():
                if _match(ms_got, value, ms_right):
                    raise Hint(f"{what}: ms: {hint}")
            expect_close(ms_got, ms_right, f"{what}: ms", rtol=1e-9, atol=1e-12)
            mom_slips = {
                "TensorFlow multiplies the learning rate into the buffer: mom <- momentum * mom "
                "+ lr * g / sqrt(ms + eps) (without lr it is PyTorch's buffer)":
                    mu * mom + g / np.sqrt(ms_right + eps),
                f"eps = {eps} goes inside the square root in TensorFlow's form: sqrt(ms + eps)":
                    mu * mom + lr * g / (np.sqrt(ms_right) + eps),
                "divide by the new ms, the one that already holds this step's g^2":
                    mu * mom + lr * g / np.sqrt(ms + eps),
            }
            for hint, value in mom_slips.items():
                if _match(mom_got, value, mom_right):
                    raise Hint(f"{what}: mom: {hint}")
            expect_close(mom_got, mom_right, f"{what}: mom", rtol=1e-9, atol=1e-12)
            w_slips = {"the step is the whole buffer, w - mom (lr is already in it)":
                           w - lr * mom_right,
                       "step against the gradient: w - mom": w + mom_right}
            for hint, value in w_slips.items():
                if _match(w_got, value, w_right):
                    raise Hint(f"{what}: w: {hint}")
            expect_close(w_got, w_right, f"{what}: w", rtol=1e-9, atol=1e-12)
            w, ms, mom = w_right, ms_right, mom_right
    return count
