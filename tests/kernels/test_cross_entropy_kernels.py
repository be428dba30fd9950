"""The cross-entropy kernels of both CPU sets against PyTorch in float64: per-pixel losses
(``reduction="none"``) and their gradient under a per-pixel upstream gradient and under one
number, with class weights, label smoothing and ignored pixels, over drawn shapes; the numba
set's pixel runs (shapes that are not multiples of a run), its float32, its thread count,
and the (N, K) logits it leaves to the reference."""

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import cross_entropy as numba_ce

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")
KSETS = pytest.mark.parametrize("kset", [REFERENCE, NUMBA], ids=lambda m: m.name)
IGNORE = 255


@st.composite
def pixel_cases(draw):
    """(z, t, weight or None, smoothing, ignore_index), float64; planes up to 3 runs wide."""
    n, k = draw(st.integers(1, 3)), draw(st.integers(1, 12))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    z = rng.standard_normal((n, k, h, w)) * 4
    ignore = draw(st.sampled_from([IGNORE, -100]))
    t = rng.integers(0, k, (n, h, w))
    t[rng.random(t.shape) < draw(st.sampled_from([0.0, 0.3]))] = ignore
    weight = rng.uniform(0.2, 3.0, k) if draw(st.booleans()) else None
    return z, t, weight, draw(st.sampled_from([0.0, 0.1])), ignore


def torch_losses(z, t, weight, smoothing, ignore, upstream):
    """PyTorch's per-pixel losses and dL/dz under ``upstream`` (per pixel)."""
    zt = torch.tensor(z, requires_grad=True)
    losses = TF.cross_entropy(zt, torch.from_numpy(t), None if weight is None else
                              torch.from_numpy(weight), ignore_index=ignore,
                              label_smoothing=smoothing, reduction="none")
    (g,) = torch.autograd.grad(losses, zt, torch.from_numpy(upstream))
    return losses.detach().numpy(), g.numpy()


@KSETS
@settings(max_examples=40, deadline=None)
@given(case=pixel_cases(), seed=st.integers(0, 2**32 - 1))
def test_pixel_losses_and_gradient_match_torch(kset, case, seed):
    z, t, weight, smoothing, ignore = case
    upstream = np.random.default_rng(seed).standard_normal(t.shape)
    losses, w_t, p = kset.cross_entropy_forward(z, t, weight, smoothing, ignore)
    dz = kset.cross_entropy_backward(p, t, weight, smoothing, ignore, upstream)
    want_losses, want_dz = torch_losses(z, t, weight, smoothing, ignore, upstream)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(dz, want_dz, rtol=1e-11, atol=1e-12)
    w = np.ones(z.shape[1]) if weight is None else weight
    np.testing.assert_array_equal(w_t, np.where(t == ignore, 0.0, w[np.where(t == ignore, 0, t)]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-13)
    # one number for every pixel (a "mean" or "sum"): the same as that number everywhere
    np.testing.assert_allclose(kset.cross_entropy_backward(p, t, weight, smoothing, ignore, 0.7),
                               kset.cross_entropy_backward(p, t, weight, smoothing, ignore,
                                                           np.full(t.shape, 0.7)),
                               rtol=1e-14, atol=1e-15)


def test_numba_takes_four_d_floats_only_and_keeps_float32():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 5, 23, 31)).astype(np.float32)
    t = rng.integers(0, 5, (2, 23, 31))
    assert numba_ce.supported(z) and not numba_ce.supported(z[:, :, 0])
    losses, w_t, p = NUMBA.cross_entropy_forward(z, t, None, 0.0, IGNORE)
    dz = NUMBA.cross_entropy_backward(p, t, None, 0.0, IGNORE, np.float32(0.5))
    assert {a.dtype for a in (losses, w_t, p, dz)} == {np.dtype(np.float32)}
    ref = REFERENCE.cross_entropy_forward(z.astype(np.float64), t, None, 0.0, IGNORE)
    np.testing.assert_allclose(losses, ref[0], rtol=2e-6, atol=1e-6)
    # (N, K) logits: the reference's own answer
    z2, t2 = rng.standard_normal((7, 4)), rng.integers(0, 4, 7)
    for a, b in zip(NUMBA.cross_entropy_forward(z2, t2, None, 0.1, -100),
                    REFERENCE.cross_entropy_forward(z2, t2, None, 0.1, -100)):
        np.testing.assert_array_equal(a, b)


def test_numba_ignores_the_thread_count():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3, 11, 37, 41))
    t = rng.integers(0, 11, (3, 37, 41))
    up, weight = rng.standard_normal(t.shape), rng.uniform(1, 2, 11)
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in (1, before):
            numba.set_num_threads(threads)
            losses, _, p = NUMBA.cross_entropy_forward(z, t, weight, 0.1, IGNORE)
            runs.append((losses, NUMBA.cross_entropy_backward(p, t, weight, 0.1, IGNORE, up)))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_float32_exponential_is_within_one_unit_in_the_last_place():
    """The numba set's float32 softmax takes e^x in its own pass (``exp_nonpositive``, x <= 0):
    within one unit in the last place of float64's e^x rounded to float32 over [-104, 0]
    (NumPy's float32 exp: within about 2.5), NaN stays NaN, and below the normal range (where
    2^n times the polynomial rounds twice) within two of the smallest subnormal, 2.8e-45."""
    from numba import njit

    @njit
    def exps(x, out):
        for i in range(x.size):
            out[i] = numba_ce.exp_nonpositive(x[i])
        return out

    x = np.concatenate([-np.linspace(0, 104, 2_000_001), [0.0, -0.0, -np.inf, np.nan, -1e-30,
                                                           -87.0, -87.5, -103.9, -104.5]]).astype(np.float32)
    got = exps(x, np.empty_like(x))
    exact = np.exp(x.astype(np.float64))
    normal = np.isfinite(x) & (exact >= np.finfo(np.float32).tiny)
    ulps = np.abs(got[normal] - exact[normal]) / np.spacing(exact[normal].astype(np.float32))
    assert ulps.max() <= 1.0, ulps.max()
    assert np.isnan(got[np.isnan(x)]).all() and got[x == -np.inf] == 0
    low = np.isfinite(x) & ~normal
    assert np.abs(got[low] - exact[low]).max() <= 2 * float(np.finfo(np.float32).smallest_subnormal)


def test_numba_float32_softmax_is_close_and_ignores_the_thread_count():
    rng = np.random.default_rng(2)
    z = (rng.standard_normal((3, 11, 37, 41)) * 6).astype(np.float32)
    t = rng.integers(0, 11, (3, 37, 41))
    exact = REFERENCE.cross_entropy_forward(z.astype(np.float64), t, None, 0.0, IGNORE)
    before = numba.get_num_threads()
    runs = []
    try:
        for threads in (1, before):
            numba.set_num_threads(threads)
            runs.append(NUMBA.cross_entropy_forward(z, t, None, 0.0, IGNORE))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    losses, _, p = runs[0]
    np.testing.assert_allclose(p, exact[2], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(losses, exact[0], rtol=1e-6, atol=1e-6)
