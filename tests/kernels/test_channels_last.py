"""The numba set's channels-last layout for small planes (see tinymbv2/kernels/numba/layout.py).

The rule under test: the numba conv and BatchNorm kernels (pointwise and depthwise
forward / backward-input / backward-weight, the ``*_bn_eval`` kernels' epilogue,
BatchNorm train forward / backward) work channels-last when the *input* plane (x's
H*W, or x_shape's for the backward kernels) has at most CHANNELS_LAST_MAX pixels and
NCHW otherwise. They accept inputs in any layout, and return activation-shaped outputs
(y, gx) in the layout they worked in; weight gradients and per-channel vectors are
ordinary C-contiguous arrays. Checked here:

* values against the reference set to float64 rounding, on planes from 1x1 to just
  above the threshold, with inputs all NCHW, all channels-last, mixed between the
  arguments, and non-contiguous views (plus one float32 case per kernel family);
* the layout of every output, on both sides of the threshold;
* bit-identical results run to run and with 1 or 2 Numba threads;
* empty batches given channels-last;
* one float64 training step of a small MobileNetV2 at 32 px with the numba set (its
  planes run 16x16 .. 1x1, all channels-last) against torchvision.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

import tinymbv2
from kernel_cases import EPS
from test_kernels import assert_close
from torch_twins import randomise_bn, rel
from tinymbv2 import Tensor
from tinymbv2.functional import cross_entropy
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba.layout import (CHANNELS_LAST_MAX, as_channels_last, as_nchw,
                                           is_channels_last)
from tinymbv2.models import mobilenet_v2

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")

TIGHT = 1e-12  # float64: max|got - want| <= TIGHT * max(1, max|want|)
LOOSE32 = 1e-5
PLANES = [1, 2, 3, 4, 7, 8, 16, 17]  # 17x17 = 289 px: above CHANNELS_LAST_MAX
BATCH_CHANNELS = [(1, 300), (3, 20), (5, 3), (3, 1)]  # 300 > 256: two depthwise channel blocks
LAYOUTS = ["nchw", "channels_last", "mixed", "view"]
CONV = ["pointwise", "depthwise3x3_s1", "depthwise3x3_s2", "depthwise5x5_s1", "depthwise5x5_s2"]
FAMILIES = CONV + ["batchnorm", "batchnorm_relu6", "batchnorm_relu"]
assert 16 * 16 <= CHANNELS_LAST_MAX < 17 * 17


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def strided(a):
    """``a`` as a non-contiguous view: the slice [:, ::2] (1-D: [::2]) of a bigger array."""
    axis = 1 if a.ndim > 1 else 0
    shape = list(a.shape)
    shape[axis] *= 2
    big = np.zeros(shape, a.dtype)
    view = big[:, ::2] if axis else big[::2]
    view[...] = a
    return view


def problems(family, n, c, h, dtype, seed=0):
    """Yield (label, kernel, args, kinds, kwargs, activation_out, want) for one family.

    kinds has a letter per argument: 'a' activation (N, C, H, W), 'p' parameter array,
    '-' anything else. activation_out: the first output is activation-shaped. want:
    the reference answer (a callable), None for the same call to the reference set."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x = r(n, c, h, h)
    if family.startswith("batchnorm"):
        clamp = family.partition("_")[2]
        g, bias = r(c), r(c) + 2  # ReLU6 both clamps and passes
        kw = {clamp: True} if clamp else {}
        _, mean, invstd = REFERENCE.batch_norm_forward_train(x, g, bias, EPS, **kw)
        yield "forward_train", "batch_norm_forward_train", (x, g, bias, EPS), "app-", kw, True, None
        yield ("backward_train", "batch_norm_backward_train", (r(n, c, h, h), x, mean, invstd, g, bias),
               "aapppp", kw, True, None)
        return
    if family == "pointwise":
        co = c + 3
        w, gy = r(co, c, 1, 1), r(n, co, h, h)
        pre = "pointwise_conv2d_"
        yield "forward", pre + "forward", (x, w), "ap", {}, True, None
        yield "backward_input", pre + "backward_input", (gy, w), "ap", {}, True, None
        yield "backward_weight", pre + "backward_weight", (gy, x), "aa", {}, False, None
        fwd_args, fwd_kinds = (x, w), "ap"
    else:  # depthwiseKxK_sS, padding K // 2
        co, k, s = c, int(family[9]), int(family[-1])
        sp = ((s, s), (k // 2, k // 2))
        ho = (h + 2 * (k // 2) - k) // s + 1
        w, gy = r(c, 1, k, k), r(n, c, ho, ho)
        pre = "depthwise_conv2d_"
        yield "forward", pre + "forward", (x, w) + sp, "ap--", {}, True, None
        yield "backward_input", pre + "backward_input", (gy, w, x.shape) + sp, "ap---", {}, True, None
        yield "backward_weight", pre + "backward_weight", (gy, x, w.shape) + sp, "aa---", {}, False, None
        fwd_args, fwd_kinds = (x, w) + sp, "ap--"
    for relu6 in (False, True):  # the *_bn_eval kernels: reference conv, then reference BN eval
        epi = (r(co), rng.uniform(0.5, 2.0, co).astype(dtype), r(co), r(co) + 2, EPS, relu6)
        want = (lambda epi=epi: REFERENCE.batch_norm_forward_eval(
            getattr(REFERENCE, pre + "forward")(*fwd_args), *epi[:5], relu6=epi[5]))
        yield (f"bn_eval(relu6={relu6})", pre + "bn_eval", fwd_args + (epi,), fwd_kinds + "-",
               {}, True, want)


def arrange(args, kinds, layout):
    """The arguments in ``layout``; 'mixed': the last activation (x where there is one)
    channels-last, the others NCHW; 'view': every array a non-contiguous view."""
    acts = [i for i, k in enumerate(kinds) if k == "a"]
    out = list(args)
    for i, kind in enumerate(kinds):
        a = args[i]
        if layout == "view" and kind in "ap":
            out[i] = strided(a)
        elif kind == "a" and (layout == "channels_last" or layout == "mixed" and i == acts[-1]):
            out[i] = as_channels_last(a)
    return out


def run(name, args, kw):
    return as_tuple(getattr(NUMBA, name)(*args, **kw))


def check_family(family, n, c, h, layout, dtype=np.float64, tol=TIGHT):
    for label, name, args, kinds, kw, _, want in problems(family, n, c, h, dtype):
        expected = as_tuple(want() if want else getattr(REFERENCE, name)(*args, **kw))
        got = run(name, arrange(args, kinds, layout), kw)
        assert len(got) == len(expected), label
        for k, (a, b) in enumerate(zip(got, expected)):
            where = f"{family} {label}[{k}] N={n} C={c} {h}x{h} {layout}"
            assert a.dtype == dtype and a.shape == b.shape, where
            assert_close(a, b, tol, where, floor=1.0)


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n,c", BATCH_CHANNELS)
@pytest.mark.parametrize("h", PLANES)
@pytest.mark.parametrize("family", FAMILIES)
def test_matches_reference_float64(family, h, n, c, layout):
    check_family(family, n, c, h, layout)


@pytest.mark.parametrize("h", [7, 17])
@pytest.mark.parametrize("family", ["pointwise", "depthwise3x3_s1", "depthwise3x3_s2", "batchnorm"])
def test_matches_reference_float32(family, h):
    check_family(family, 3, 70, h, "channels_last", np.float32, LOOSE32)


# ---------------------------------------------------------------- layout
@pytest.mark.parametrize("h", PLANES)
@pytest.mark.parametrize("family", FAMILIES)
def test_output_layout_follows_input_plane(family, h):
    """Activation outputs channels-last up to CHANNELS_LAST_MAX input pixels, C-contiguous
    above (a 1x1 plane is both); weight gradients and per-channel vectors C-contiguous."""
    small = h * h <= CHANNELS_LAST_MAX
    for layout in ("nchw", "channels_last", "view"):
        for label, name, args, kinds, kw, act_out, _ in problems(family, 3, 20, h, np.float64):
            out = run(name, arrange(args, kinds, layout), kw)
            where = f"{family} {label} {h}x{h} from {layout}"
            if act_out:
                if small:
                    assert is_channels_last(out[0]), f"{where}: not channels-last"
                else:
                    assert out[0].flags.c_contiguous, f"{where}: not C-contiguous"
                if h == 1:
                    assert is_channels_last(out[0]) and out[0].flags.c_contiguous, where
            for k, o in enumerate(out[int(act_out):], int(act_out)):
                assert o.flags.c_contiguous, f"{where}: output {k} {o.shape} not C-contiguous"


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("family", FAMILIES)
def test_channels_last_paths_are_deterministic(family):
    """Bit-identical run to run, and with 1 Numba thread as with 2."""
    calls = [(f"{label} {h}x{h}", name, arrange(args, kinds, "channels_last"), kw)
             for h in (2, 4, 7, 16)
             for label, name, args, kinds, kw, _, _ in problems(family, 5, 300, h, np.float64, seed=h)]

    def run_all():
        return [run(name, args, kw) for _, name, args, kw in calls]

    first, second = run_all(), run_all()
    before = numba.get_num_threads()
    by_threads = {}
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            by_threads[threads] = run_all()
    finally:
        numba.set_num_threads(before)
    for i, (label, *_) in enumerate(calls):
        for k, a in enumerate(first[i]):
            assert a.tobytes() == second[i][k].tobytes(), f"{label}[{k}] differs between runs"
            for threads, res in by_threads.items():
                assert a.tobytes() == res[i][k].tobytes(), f"{label}[{k}] differs with {threads} thread(s)"


# ---------------------------------------------------------------- empty batch
@pytest.mark.parametrize("h", [1, 3, 4, 16, 17])
@pytest.mark.parametrize("family", CONV)
def test_conv_kernels_take_an_empty_channels_last_batch(family, h):
    for label, name, args, kinds, kw, act_out, want in problems(family, 0, 70, h, np.float64):
        expected = as_tuple(want() if want else getattr(REFERENCE, name)(*args, **kw))
        cl_args = arrange(args, kinds, "channels_last")
        assert all(is_channels_last(a) for a, k in zip(cl_args, kinds) if k == "a")
        (got,) = run(name, cl_args, kw)
        assert got.shape == expected[0].shape and got.dtype == np.float64, f"{family} {label}"
        if not act_out:  # weight gradient
            assert got.flags.c_contiguous and not got.any(), f"{family} {label}"


# ---------------------------------------------------------------- end to end
@pytest.mark.parametrize("small_input", [False, True])
def test_mobilenet_v2_training_step_with_numba_matches_torchvision(small_input):
    """Float64 train mode, forward and backward at 32 px: planes 16x16 .. 1x1 (with small_input
    32x32 .. 4x4, NCHW feeding channels-last), same weights. Width 0.5: at 0.35 the 24-channel
    stage is as wide as the 16 one and small_input would add a residual torchvision lacks.
    Batch 4: on the 1x1 planes BatchNorm sees only N values, and with 2 or 3 its backward
    amplifies float64 rounding to ~1e-9 in any kernel set (the reference one included)."""
    torch.manual_seed(0)
    tv = randomise_bn(torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10))
    if small_input:  # as test_parity: what mobilenet_v2(small_input=True) changes
        tv.features[0][0].stride = (1, 1)
        tv.features[2].conv[1][0].stride = (1, 1)
    ours = mobilenet_v2(0.5, 10, small_input=small_input, seed=0)
    ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    ours.double().train()
    tv.double().train()
    ours.classifier[0].eval()  # Dropout off on both sides
    tv.classifier[0].eval()
    rng = np.random.default_rng(2)
    x, target = rng.standard_normal((4, 3, 32, 32)), rng.integers(0, 10, 4)

    with tinymbv2.use_kernels("numba"):
        xs = Tensor(x.copy(), requires_grad=True)
        loss = cross_entropy(ours(xs), target)
        loss.backward()
    xt = torch.tensor(x, requires_grad=True)
    tloss = F.cross_entropy(tv(xt), torch.from_numpy(target))
    tloss.backward()

    assert rel(np.asarray(loss.data), tloss) <= 1e-9
    assert rel(xs.grad, xt.grad) <= 1e-9
    tv_params = dict(tv.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in tv.parameters())
    for name, p in ours.named_parameters():
        ref = tv_params[name].grad.numpy()
        if np.abs(ref).max() <= 1e-12 * scale:  # projection BN bias: exactly 0 (test_parity)
            assert np.abs(p.grad).max() <= 1e-12 * scale, name
        else:
            assert rel(p.grad, ref) <= 1e-9, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("r0,r1,c0,c1", [(0, 16, 0, 16), (3, 40, 5, 37), (0, 64, 0, 160),
                                         (1, 2, 0, 1), (0, 17, 0, 33), (5, 5, 0, 3), (2, 50, 7, 7)])
def test_register_transpose_matches_numpy(dtype, r0, r1, c0, c1):
    """kernels/numba/transpose.py's transpose_into: whole blocks in registers and the edges
    value by value give src[r0:r1, c0:c1].T exactly, in the top left of dst, and write
    nothing else."""
    from tinymbv2.kernels.numba.transpose import transpose_into

    rng = np.random.default_rng(r1 * 100 + c1)
    src = rng.standard_normal((70, 200)).astype(dtype)
    dst = np.full((300, 80), np.nan, dtype)
    transpose_into(src, r0, r1, c0, c1, dst)
    rows, cols = r1 - r0, c1 - c0
    assert np.array_equal(dst[:cols, :rows], src[r0:r1, c0:c1].T)
    assert np.isnan(dst[cols:]).all() and np.isnan(dst[:, rows:]).all()
    with pytest.raises(ValueError, match="contiguous rows"):
        transpose_into(src[:, ::2], 0, 4, 0, 4, dst)


@pytest.mark.parametrize("shape", [(8, 192, 14, 14), (3, 17, 5, 3), (2, 1280, 7, 7), (1, 1, 1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_layout_copies_keep_every_value(shape, dtype):
    """as_channels_last and as_nchw (kernels/numba/layout.py; transposes in registers for
    floats, NumPy's copy for other dtypes): the same values in the other layout, and the array
    itself when it is in that layout already."""
    a = (np.random.default_rng(1).standard_normal(shape) * 100).astype(dtype)
    cl = as_channels_last(a)
    assert np.array_equal(cl, a) and is_channels_last(cl) and as_channels_last(cl) is cl
    back = as_nchw(cl)
    assert np.array_equal(back, a) and back.flags.c_contiguous and as_nchw(back) is back


def test_global_pooling_gradient_keeps_the_input_layout():
    """The head's global average pooling hands its gradient back in its input's layout, so a
    channels-last activation's gradient needs no copy into it; the values are PyTorch's."""
    from tinymbv2.functional import adaptive_avg_pool2d

    x = np.random.default_rng(2).standard_normal((3, 5, 4, 6))
    g = np.random.default_rng(3).standard_normal((3, 5, 1, 1))
    xt = torch.tensor(x, requires_grad=True)
    F.adaptive_avg_pool2d(xt, 1).backward(torch.tensor(g))
    for a in (x, np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)):
        t = Tensor(a, requires_grad=True)
        adaptive_avg_pool2d(t, 1).backward(g)
        assert np.array_equal(t.grad, xt.grad.numpy())
        assert is_channels_last(t.grad) == is_channels_last(a)
