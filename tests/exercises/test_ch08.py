"""Chapter 8's checks answer common wrong answers with the hint meant for them."""
import math

import numpy as np

from tinymbv2.exercises import (check_adam_step, check_rmsprop_step, check_rmsprop_tf_step,
                                check_warmup_cosine)


def rmsprop(w, g, v, lr, alpha, eps, *, new_weight=None, eps_inside=False, old_v=False):
    v_new = alpha * v + (1 - alpha if new_weight is None else new_weight) * g ** 2
    v_used = v if old_v else v_new
    denom = np.sqrt(v_used + eps) if eps_inside else np.sqrt(v_used) + eps
    return w - lr * g / denom, v_new


def test_rmsprop_step_hints():
    assert check_rmsprop_step(rmsprop).message == "correct (10 cases)"
    assert "v: the running mean is alpha v + (1 - alpha) g^2" in check_rmsprop_step(
        lambda *a: rmsprop(*a, new_weight=1.0)).message
    assert "goes outside the square root, sqrt(v) + eps (inside is TensorFlow's form)" in \
        check_rmsprop_step(lambda *a: rmsprop(*a, eps_inside=True)).message
    assert "divide by the new v" in check_rmsprop_step(lambda *a: rmsprop(*a, old_v=True)).message
    assert "return the tuple (w, v), got a ndarray" in check_rmsprop_step(lambda *a: rmsprop(*a)[0]).message

    def in_place(w, g, v, lr, alpha, eps):   # updating the given arrays is fine too
        v *= alpha
        v += (1 - alpha) * g * g
        w -= lr * g / (np.sqrt(v) + eps)
        return w, v
    assert check_rmsprop_step(in_place).passed


def adam(w, g, m, v, t, lr, b1, b2, eps, *, correct=True, t_shift=0, eps_inside=False, square=True):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * (g ** 2 if square else g)
    tt = t + t_shift
    m_hat, v_hat = (m / (1 - b1 ** tt), v / (1 - b2 ** tt)) if correct else (m, v)
    denom = np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps
    return w - lr * m_hat / denom, m, v


def test_adam_step_hints():
    assert check_adam_step(adam).message == "correct (10 cases)"
    assert "(the bias correction)" in check_adam_step(lambda *a: adam(*a, correct=False)).message
    assert "w: t counts the steps from 1: this is step t = 1" in \
        check_adam_step(lambda *a: adam(*a, t_shift=1)).message
    with np.errstate(divide="ignore", invalid="ignore"):
        from_zero = check_adam_step(lambda *a: adam(*a, t_shift=-1)).message
    assert "a bias correction 1 - beta^0 = 0? t counts the steps from 1" in from_zero
    assert "goes outside the square root: sqrt(v_hat) + eps" in \
        check_adam_step(lambda *a: adam(*a, eps_inside=True)).message
    with np.errstate(invalid="ignore"):   # sqrt of a negative "v"
        unsquared = check_adam_step(lambda *a: adam(*a, square=False)).message
    assert "v: v averages the squared gradient, g^2" in unsquared


def warmup_cosine(step, total, warmup, base, *, from_zero=False, cosine_over=None, linear=False):
    if step < warmup:
        return base * (step if from_zero else step + 1) / warmup
    span = total - warmup if cosine_over is None else cosine_over
    progress = (step - warmup) / span
    return base * (1 - progress) if linear else base * (1 + math.cos(math.pi * progress)) / 2


def test_warmup_cosine_hints():
    assert check_warmup_cosine(warmup_cosine).message == "correct (1127 cases)"
    from_zero = check_warmup_cosine(lambda *a: warmup_cosine(*a, from_zero=True)).message
    assert from_zero.startswith("not yet: warmup_cosine(0, 100, 10, 0.1): you gave 0, expected 0.01")
    assert "step 0 already trains" in from_zero
    assert "the cosine runs over the total_steps - warmup_steps = 90 steps" in \
        check_warmup_cosine(lambda s, t, w, b: warmup_cosine(s, t, w, b, cosine_over=t)).message
    assert check_warmup_cosine(lambda *a: warmup_cosine(*a, linear=True)).message == (
        "not yet: warmup_cosine(11, 100, 10, 0.1): you gave 0.0988889, expected 0.0999695 "
        "(in the cosine decay)")


def rmsprop_tf(w, g, ms, mom, lr, alpha, mu, eps, *, new_weight=None, lr_outside=False,
               eps_outside=False, old_ms=False, lr_twice=False):
    ms_new = alpha * ms + (1 - alpha if new_weight is None else new_weight) * g ** 2
    ms_used = ms if old_ms else ms_new
    denom = np.sqrt(ms_used) + eps if eps_outside else np.sqrt(ms_used + eps)
    mom = mu * mom + (1 if lr_outside else lr) * g / denom
    return w - (lr if lr_outside or lr_twice else 1) * mom, ms_new, mom


def test_rmsprop_tf_step_hints():
    assert check_rmsprop_tf_step(rmsprop_tf).message == "correct (10 cases)"
    assert "ms: the running mean is alpha ms + (1 - alpha) g^2" in check_rmsprop_tf_step(
        lambda *a: rmsprop_tf(*a, new_weight=1.0)).message
    assert "mom: TensorFlow multiplies the learning rate into the buffer" in \
        check_rmsprop_tf_step(lambda *a: rmsprop_tf(*a, lr_outside=True)).message
    assert "mom: eps = 1.0 goes inside the square root" in \
        check_rmsprop_tf_step(lambda *a: rmsprop_tf(*a, eps_outside=True)).message
    assert "mom: divide by the new ms" in \
        check_rmsprop_tf_step(lambda *a: rmsprop_tf(*a, old_ms=True)).message
    assert "w: the step is the whole buffer, w - mom (lr is already in it)" in \
        check_rmsprop_tf_step(lambda *a: rmsprop_tf(*a, lr_twice=True)).message
    assert "return the tuple (w, ms, mom), got a ndarray" in \
        check_rmsprop_tf_step(lambda *a: rmsprop_tf(*a)[0]).message
