"""F.interpolate and nn.Upsample against torch.nn.functional.interpolate (float64, random
configurations, a random upstream gradient), in both CPU kernel sets; the argument rules."""
import numpy as np
import pytest
import torch

import tinymbv2
from tinymbv2 import Tensor, nn
from tinymbv2 import functional as F
from tinymbv2.kernels import kernel_set

TOL = 1e-12  # float64: |ours - torch| <= TOL * max(1, max |torch|)


def _close(ours, theirs, what):
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, what
    err = np.abs(ours - theirs).max(initial=0.0)
    assert err <= TOL * max(1.0, np.abs(theirs).max(initial=0.0)), f"{what}: {err}"


def _compare(x, kw, seed=0):
    """Ours and torch's, value and input gradient under a random upstream gradient."""
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.interpolate(xt, **kw)
    g = np.random.default_rng(seed + 1).standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(g))
    xo = Tensor(x.copy(), requires_grad=True)
    y = F.interpolate(xo, **kw)
    y.backward(g)
    _close(y.data, yt, f"forward {kw}")
    _close(xo.grad, xt.grad, f"backward {kw}")


def _configurations(seed, count=40):
    """Random shapes, both modes, both corner rules, size or (non-integer) scale factors."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        shape = tuple(int(v) for v in rng.integers(1, 4, 2)) + tuple(int(v) for v in rng.integers(1, 13, 2))
        mode = ["bilinear", "nearest"][len(out) % 2]
        kw = {"mode": mode}
        if mode == "bilinear":
            kw["align_corners"] = [None, False, True][len(out) % 3]
        if len(out) % 4 < 2:
            kw["size"] = tuple(int(v) for v in rng.integers(1, 30, 2))
        else:
            kw["scale_factor"] = tuple(float(v) for v in rng.uniform(0.3, 3.5, 2))
            if min(int(n * s) for n, s in zip(shape[2:], kw["scale_factor"])) < 1:
                continue
        out.append((shape, kw))
    return out


@pytest.mark.parametrize("kernels", ["reference", "numba"])
@pytest.mark.parametrize("seed", range(3))
def test_interpolate_matches_torch_on_random_configurations(kernels, seed):
    with tinymbv2.use_kernels(kernels):
        for i, (shape, kw) in enumerate(_configurations(seed)):
            x = np.random.default_rng(100 * seed + i).standard_normal(shape)
            _compare(x, kw, seed=i)


@pytest.mark.parametrize("kernels", ["reference", "numba"])
@pytest.mark.parametrize("kw", [
    {"size": (64, 64), "mode": "bilinear"},                       # a head's x16 upsampling
    {"scale_factor": 2, "mode": "bilinear", "align_corners": True},
    {"scale_factor": 2, "mode": "nearest"},                       # PyTorch's o >> 1 shortcut
    {"scale_factor": 0.5, "mode": "bilinear"},                    # downsampling
    {"size": 5, "mode": "nearest"},                               # 4 -> 5: floor(o * 0.8)
    {"scale_factor": (1.1, 1.0), "mode": "bilinear"},             # a size kept: copied as is
    {"scale_factor": 1.1, "mode": "nearest"},                     # 4 -> 4: kept, scale or not
    {"scale_factor": 1 / 3, "mode": "nearest"},                   # ratio 3 in float32
    {"size": (1, 1), "mode": "bilinear", "align_corners": True},  # one output: source 0
])
def test_interpolate_special_cases(kernels, kw):
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 4))
    if kw.get("scale_factor") == 1 / 3:
        x = np.random.default_rng(3).standard_normal((1, 2, 9, 12))
    with tinymbv2.use_kernels(kernels):
        _compare(x, kw)


def test_interpolate_float32_close_to_torch_and_the_sets_agree():
    x = np.random.default_rng(4).standard_normal((2, 5, 7, 9)).astype(np.float32)
    g = np.random.default_rng(5).standard_normal((2, 5, 50, 33)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x), size=(50, 33), mode="bilinear")
    ref, fast = kernel_set("reference"), kernel_set("numba")
    for k in (ref, fast):
        y = k.interpolate_forward(x, (50, 33), "bilinear", False, None)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, want.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.interpolate_backward(g, x.shape, "bilinear", False, None),
                               ref.interpolate_backward(g, x.shape, "bilinear", False, None),
                               rtol=0, atol=1e-4)


def test_interpolate_weights_sum_to_one_and_nearest_copies():
    """Every output is a convex mix of inputs (a constant image stays constant), and
    nearest's values are the inputs' own bits."""
    x = np.full((1, 2, 5, 7), 3.25)
    for ac in (False, True):
        np.testing.assert_allclose(F.interpolate(Tensor(x), size=(11, 4), align_corners=ac).data, 3.25,
                                   rtol=0, atol=1e-14)
    x = np.random.default_rng(6).standard_normal((1, 1, 3, 3))
    y = F.interpolate(Tensor(x), size=(7, 8), mode="nearest").data
    assert set(y.ravel().tolist()) <= set(x.ravel().tolist())


def test_upsample_layer_is_interpolate():
    x = np.random.default_rng(7).standard_normal((2, 3, 5, 6))
    layer = nn.Upsample(scale_factor=2.5, mode="bilinear", align_corners=True)
    want = torch.nn.Upsample(scale_factor=2.5, mode="bilinear", align_corners=True)(torch.from_numpy(x))
    _close(layer(Tensor(x)).data, want, "Upsample")
    assert "scale_factor=2.5" in repr(layer) and "mode='bilinear'" in repr(layer)
    near = nn.Upsample(size=(4, 9))
    _close(near(Tensor(x)).data, torch.nn.Upsample(size=(4, 9))(torch.from_numpy(x)), "Upsample nearest")
    with pytest.raises(ValueError, match="Upsample: align_corners can only be set with mode 'bilinear'"):
        nn.Upsample(scale_factor=2, mode="nearest", align_corners=False)


@pytest.mark.parametrize("call,error,message", [
    (lambda x: F.interpolate(x, size=4, mode="linear"), ValueError,
     r"interpolate: expected mode 'bilinear' or 'nearest' .* got 'linear'"),
    (lambda x: F.interpolate(x, size=4, mode="bicubic"), ValueError, r"got 'bicubic'"),
    (lambda x: F.interpolate(x, size=4, mode="nearest", align_corners=False), ValueError,
     r"interpolate: align_corners can only be set with mode 'bilinear'"),
    (lambda x: F.interpolate(x), ValueError, r"interpolate: expected exactly one of size and scale_factor"),
    (lambda x: F.interpolate(x, size=4, scale_factor=2), ValueError, r"exactly one of size and scale_factor"),
    (lambda x: F.interpolate(x[0], size=4), ValueError, r"interpolate: expected x of rank 4 \(N, C, H, W\)"),
    (lambda x: F.interpolate(x, size=(4, 4, 4)), ValueError, r"expected size for the 2 spatial axes"),
    (lambda x: F.interpolate(x, size=0), ValueError, r"expected an output size >= 1"),
    (lambda x: F.interpolate(x, size=2.5), TypeError, r"expected size as a number or a pair"),
    (lambda x: F.interpolate(x, scale_factor=-1.0), ValueError, r"expected a positive scale_factor"),
    (lambda x: F.interpolate(x, scale_factor=0.1), ValueError, r"into \(0, 0\), an empty one"),
    (lambda x: F.interpolate(x, size=4, align_corners=1), TypeError, r"align_corners True, False or None"),
    (lambda x: F.interpolate(x.data, size=4), TypeError, r"interpolate: expected x to be a Tensor"),
])
def test_interpolate_bad_arguments(call, error, message):
    x = Tensor(np.zeros((1, 2, 4, 4)))
    with pytest.raises(error, match=message):
        call(x)


def test_torch_rejects_what_we_reject():
    """The same calls fail in PyTorch: we refuse nothing it accepts for these."""
    x = torch.zeros(1, 2, 4, 4)
    for kw in ({"size": 4, "mode": "linear"}, {"size": 4, "mode": "nearest", "align_corners": False},
               {}, {"size": 4, "scale_factor": 2}):
        with pytest.raises((ValueError, NotImplementedError)):
            torch.nn.functional.interpolate(x, **kw)


@pytest.mark.parametrize("name", ["reference", "numba"])
def test_interpolate_kernels_check_their_arrays(name):
    k = kernel_set(name)
    with pytest.raises(ValueError, match="interpolate_forward: x must be 4-D"):
        k.interpolate_forward(np.zeros((2, 4, 4)), (3, 3), "bilinear", False, None)
    with pytest.raises(TypeError, match="interpolate_forward: x must be float32 or float64"):
        k.interpolate_forward(np.zeros((1, 2, 4, 4), np.int64), (3, 3), "bilinear", False, None)
    with pytest.raises(ValueError, match=r"interpolate_backward: gy must have shape \(1, 2, 3, 3\)"):
        k.interpolate_backward(np.zeros((1, 3, 3, 3)), (1, 2, 4, 4), "bilinear", False, None)


@pytest.mark.parametrize("kernels", ["reference", "numba"])
def test_interpolate_passes_gradcheck(kernels):
    """Central differences agree with the backward (the op is linear: exactly, up to rounding)."""
    from tinymbv2.gradcheck import gradcheck

    x = Tensor(np.random.default_rng(8).standard_normal((2, 2, 5, 4)), requires_grad=True)
    with tinymbv2.use_kernels(kernels):
        for kw in ({"size": (7, 3)}, {"scale_factor": 1.7, "align_corners": True},
                   {"size": (9, 2), "mode": "nearest"}):
            assert gradcheck(lambda t: F.interpolate(t, **kw), [x])


def test_numba_resize_keeps_a_non_finite_value_where_torch_does():
    """The numba set resizes by the taps: an infinite input reaches only the outputs that read
    it, as in PyTorch (a product with the resize matrices would spread NaN along its row)."""
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 7))
    x[0, 1, 2, 3] = np.inf
    numba_set = kernel_set("numba")
    for kw in ({"mode": "bilinear", "align_corners": False}, {"mode": "bilinear", "align_corners": True},
               {"mode": "nearest", "align_corners": False}):
        torch_kw = kw if kw["mode"] == "bilinear" else {"mode": "nearest"}
        theirs = torch.nn.functional.interpolate(torch.from_numpy(x), size=(13, 11),
                                                 **torch_kw).numpy()
        ours = numba_set.interpolate_forward(x, (13, 11), kw["mode"], kw["align_corners"], None)
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
        assert np.isinf(ours).any() and np.isfinite(ours[0, 0]).all()
        np.testing.assert_allclose(ours[np.isfinite(ours)], theirs[np.isfinite(theirs)], rtol=TOL,
                                   atol=TOL)


def test_numba_resize_ignores_the_thread_count():
    import numba

    rng = np.random.default_rng(6)
    x, gy = rng.standard_normal((2, 5, 9, 11)), rng.standard_normal((2, 5, 40, 33))
    numba_set, before, runs = kernel_set("numba"), numba.get_num_threads(), []
    try:
        for threads in (1, before):
            numba.set_num_threads(threads)
            runs.append((numba_set.interpolate_forward(x, (40, 33), "bilinear", False, None),
                         numba_set.interpolate_backward(gy, x.shape, "bilinear", False, None)))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape, size", [((4, 24, 1, 1), (16, 16)), ((2, 5, 9, 11), (13, 7)),
                                         ((1, 3, 30, 30), (12, 12))])
def test_numba_small_planes_resize_channels_last_with_the_planes_bits(shape, size, monkeypatch):
    """An output plane the numba set keeps channels-last (ASPP's pooling branch: 1 x 1 to
    16 x 16) is resized pixel by pixel and comes channels-last; forward and backward give
    the bits of the planes' kernels, which the small-plane rule turned off reaches."""
    from tinymbv2.kernels.numba import interpolate as numba_interpolate
    from tinymbv2.kernels.numba.layout import channels_last_plane, is_channels_last

    rng = np.random.default_rng(9)
    numba_set = kernel_set("numba")
    for mode, corners in (("bilinear", False), ("bilinear", True), ("nearest", False)):
        x = rng.standard_normal(shape).astype(np.float32)
        gy = rng.standard_normal(shape[:2] + size).astype(np.float32)
        y = numba_set.interpolate_forward(x, size, mode, corners, None)
        gx = numba_set.interpolate_backward(gy, shape, mode, corners, None)
        assert is_channels_last(y)
        assert is_channels_last(gx) == channels_last_plane(*shape[2:])
        monkeypatch.setattr(numba_interpolate, "channels_last_plane", lambda h, w: False)
        np.testing.assert_array_equal(y, numba_set.interpolate_forward(x, size, mode, corners, None))
        np.testing.assert_array_equal(gx, numba_set.interpolate_backward(gy, shape, mode, corners, None))
        monkeypatch.undo()
