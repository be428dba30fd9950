"""The depthwise stage of a block in training as one op (``F.depthwise_stage_train``).

relu6(BN2(depthwise3x3(relu6(BN1(e))))) with training-mode BatchNorms, checked against
PyTorch's separate ops in float64 (values, the six gradients for a random upstream
gradient, the running statistics), with both CPU kernel sets: the numba set runs its
fused kernels (:mod:`tinymbv2.kernels.numba.stage` on planes above the channels-last ones,
:mod:`tinymbv2.kernels.numba.stage_channels_last` on those at stride 1, the filter dilated
or not), the three separate kernels elsewhere and in the reference set. The model must use
it; the kernels themselves (the bits of the separate numba kernels, any thread count, any
layout) are checked in ``tests/kernels/test_numba_stage.py`` and
``test_numba_stage_channels_last.py``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tinymbv2 import Tensor, nn
from tinymbv2 import functional as F
from tinymbv2.functional import cross_entropy
from tinymbv2.fusion import fuse
from tinymbv2.kernels.numba import layout, stage, stage_channels_last
from tinymbv2.models import mobilenet_v2
from tinymbv2.profiler import profile
from errors import assert_close
from kernel_cases import channels_last_max

TOL64 = 1e-10
MOMENTUM, EPS1, EPS2 = 0.1, 1e-5, 1e-3

# (n, c, h, w, stride): planes above 256 pixels take the numba set's fused kernel
CASES = [
    (2, 3, 17, 17, 1),     # 289 pixels: fused
    (2, 4, 20, 19, 2),     # odd width at stride 2
    (3, 2, 18, 21, 2),
    (1, 5, 24, 24, 1),
    (2, 3, 9, 8, 1),       # small planes: the separate kernels, channels-last in numba
    (2, 3, 11, 9, 2),
]


def _params(rng, c):
    return dict(w1=rng.uniform(0.5, 2.0, c), b1=rng.standard_normal(c),
                wd=rng.standard_normal((c, 1, 3, 3)), w2=rng.uniform(0.5, 2.0, c),
                b2=rng.uniform(0.0, 2.0, c),  # most of d's BatchNorm output inside (0, 6)
                rm1=rng.standard_normal(c), rv1=rng.uniform(0.5, 2.0, c),
                rm2=rng.standard_normal(c), rv2=rng.uniform(0.5, 2.0, c))


def _case(n, c, h, w, stride, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n, c, h, w)) * 2 + 0.5
    p = _params(rng, c)
    g = rng.standard_normal((n, c, (h - 1) // stride + 1, (w - 1) // stride + 1))
    return e.astype(dtype), {k: v.astype(dtype) for k, v in p.items()}, g.astype(dtype)


def _torch_stage(e, p, g, stride, dilation=1):
    t = {k: torch.tensor(v, requires_grad=k[0] in "wb") for k, v in p.items()}
    te = torch.tensor(e, requires_grad=True)
    f = torch.nn.functional
    a = f.relu6(f.batch_norm(te, t["rm1"], t["rv1"], t["w1"], t["b1"], True, MOMENTUM, EPS1))
    d = f.conv2d(a, t["wd"], stride=stride, padding=dilation, dilation=dilation,
                 groups=e.shape[1])
    h = f.relu6(f.batch_norm(d, t["rm2"], t["rv2"], t["w2"], t["b2"], True, MOMENTUM, EPS2))
    h.backward(torch.tensor(g))
    grads = [x.grad.numpy() for x in (te, t["w1"], t["b1"], t["wd"], t["w2"], t["b2"])]
    return h.detach().numpy(), grads, [t[k].detach().numpy() for k in ("rm1", "rv1", "rm2", "rv2")]


def _ours(e, p, g, stride, dilation=1):
    p = {k: v.copy() for k, v in p.items()}
    params = {k: Tensor(p[k], requires_grad=True) for k in ("w1", "b1", "wd", "w2", "b2")}
    te = Tensor(e.copy(), requires_grad=True)
    h = F.depthwise_stage_train(
        te, (p["rm1"], p["rv1"], params["w1"], params["b1"], MOMENTUM, EPS1), params["wd"],
        stride, (p["rm2"], p["rv2"], params["w2"], params["b2"], MOMENTUM, EPS2),
        dilation=dilation)
    h.backward(Tensor(g))
    grads = [x.grad for x in (te, params["w1"], params["b1"], params["wd"], params["w2"],
                              params["b2"])]
    return h.data, grads, [p[k] for k in ("rm1", "rv1", "rm2", "rv2")]


@pytest.mark.parametrize("case", CASES)
def test_depthwise_stage_matches_torch(kernel_set, case):
    *shape, stride = case
    e, p, g = _case(*shape, stride)
    h, grads, running = _ours(e, p, g, stride)
    h_t, grads_t, running_t = _torch_stage(e, p, g, stride)
    assert_close("depthwise_stage_train", h, h_t, TOL64)
    names = ("grad input", "grad weight1", "grad bias1", "grad depthwise weight",
             "grad weight2", "grad bias2")
    for name, ours, theirs in zip(names, grads, grads_t):
        assert_close(f"depthwise_stage_train {name}", ours, theirs, TOL64)
    for ours, theirs in zip(running, running_t):
        assert_close("depthwise_stage_train running stats", ours, theirs, TOL64)


@pytest.mark.parametrize("n,c,h,w,dilation", [(2, 3, 9, 8, 2), (3, 20, 16, 16, 3),
                                               (1, 4, 6, 11, 7), (2, 3, 17, 19, 2),
                                               (2, 260, 8, 9, 2), (1, 256, 16, 16, 17)])
def test_dilated_depthwise_stage_matches_torch(kernel_set, n, c, h, w, dilation):
    """DeepLab's atrous blocks: the filter dilated, padding equal to the dilation, stride 1;
    channels-last planes (with 256 channels and more, the numba set's kernel for them; with
    fewer, its simple kernels) and a larger NCHW one."""
    e, p, g = _case(n, c, h, w, 1, seed=dilation)
    h_ours, grads, running = _ours(e, p, g, 1, dilation)
    h_t, grads_t, running_t = _torch_stage(e, p, g, 1, dilation)
    assert_close("depthwise_stage_train dilated", h_ours, h_t, TOL64)
    for ours, theirs in zip(grads + running, grads_t + running_t):
        assert_close("depthwise_stage_train dilated grads, stats", ours, theirs, TOL64)


def test_the_cases_reach_both_numba_paths():
    """Guard for the cases above: some run the fused kernel, some the separate ones."""
    fused = [stage.stage_supported(np.zeros((n, c, h, w)), np.zeros((c, 1, 3, 3)), s)
             for n, c, h, w, s in CASES]
    assert any(fused) and not all(fused)


def _train_step(model, x, y):
    loss = cross_entropy(model(Tensor(x)), y)
    loss.backward()
    return (loss.data.copy(), {k: np.array(v) for k, v in model.state_dict().items()},
            {k: q.grad.copy() for k, q in model.named_parameters()})


@pytest.mark.parametrize("layout_max,fused_blocks,channels_last_blocks",
                         [(None, 4, 0), (None, 4, 11), (0, 17, 0)],
                         ids=["default-layout", "any-size", "layout-off"])
def test_model_training_uses_the_stage_and_matches_the_layers(monkeypatch, layout_max,
                                                               fused_blocks,
                                                               channels_last_blocks):
    """A training step of fused MobileNetV2 at 96 px equals the plain one (layer by layer), running
    statistics and batch counts too. The blocks whose depthwise input planes are above the
    channels-last ones (48x48 and 24x24: blocks 1-4, block 1 with the stem's BatchNorm)
    run the numba set's one-pass kernel, the others its three simple kernels: at 96 px no
    stage has the channels and pixels its channels-last kernel takes (``any-size`` lowers
    those bounds: then the stride-1 blocks on the channels-last planes run it, blocks 5, 6,
    8-13 and 15-17, and the two at stride 2 there, 7 and 14, the simple kernels); with that
    layout off, all 17 run the one-pass kernel."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 96, 96))
    y = rng.integers(0, 10, 3)
    if channels_last_blocks:
        monkeypatch.setattr(stage_channels_last, "MIN_CHANNELS", 0)
        monkeypatch.setattr(stage_channels_last, "MIN_PIXELS", 0)
    with channels_last_max(layout.CHANNELS_LAST_MAX if layout_max is None else layout_max):
        fused_model = mobilenet_v2(num_classes=10, dropout=0.0, seed=0).double()
        kernel_calls = []  # the numba set's one-pass kernel, counted
        one_pass = stage.stage_forward_train
        monkeypatch.setattr(stage, "stage_forward_train",
                            lambda *args: kernel_calls.append(1) or one_pass(*args))
        rows_calls = []  # and its channels-last kernel
        by_rows = stage_channels_last.stage_forward_train
        monkeypatch.setattr(stage_channels_last, "stage_forward_train",
                            lambda *args: rows_calls.append(1) or by_rows(*args))
        with profile() as prof:
            fused = _train_step(fuse(fused_model), x, y)
        layered = _train_step(mobilenet_v2(num_classes=10, dropout=0.0, seed=0).double(), x, y)
    # the same ops, rounded alike but for BatchNorm sums over differently laid-out planes
    np.testing.assert_allclose(fused[0], layered[0], rtol=1e-13)
    assert fused[1].keys() == layered[1].keys() and fused[2].keys() == layered[2].keys()
    for key in fused[1]:  # atol: running means of values centred on 0 are ~1e-17
        np.testing.assert_allclose(fused[1][key], layered[1][key], rtol=1e-11, atol=1e-14)
    for key in fused[2]:  # relative to the largest gradient (some are 0 up to rounding:
        a, b = fused[2][key], layered[2][key]  # a BatchNorm's bias before a training one)
        assert np.abs(a - b).max() <= 1e-10 * max(np.abs(b).max(), 1e-3), key
    assert fused[1]["features.2.conv.1.1.num_batches_tracked"] == 1
    # every block's middle is one op; the numba set's one-pass kernel runs fused_blocks of them
    assert prof.calls[("DepthwiseStageTrain", "forward")] == 17
    assert prof.calls[("DepthwiseStageTrain", "backward")] == 17
    assert len(kernel_calls) == fused_blocks and len(rows_calls) == channels_last_blocks


def test_blocks_with_an_eval_batchnorm_or_a_swapped_layer_run_layer_by_layer():
    """Frozen BatchNorms (eval mode while training, as in fine-tuning) and a block whose
    layers a user changed are not the stage: their layers run one by one, as built."""
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    model = mobilenet_v2(num_classes=10, seed=0)
    block = model.features[2]
    block.conv[1][1].eval()  # the depthwise BatchNorm of block 2 frozen
    model.features[3].conv[0][2] = nn.ReLU()  # block 3's expansion activation swapped
    model.features[0][1].eval()  # the stem's BatchNorm frozen: block 1 runs unfused too
    with channels_last_max(0), profile() as prof:  # every plane NCHW: all 17 blocks fusable
        fuse(model)(x)
    assert prof.calls[("DepthwiseStageTrain", "forward")] == 14  # 17 blocks minus these three
    assert int(block.conv[1][1].num_batches_tracked.data) == 0  # frozen: not counted
    assert int(block.conv[0][1].num_batches_tracked.data) == 1
    assert int(model.features[1].conv[0][1].num_batches_tracked.data) == 1


def _stage_args(c=3, dtype=np.float32):
    e = Tensor(np.ones((2, c, 17, 17), dtype))
    norm = (None, None, Tensor(np.ones(c, dtype)), Tensor(np.zeros(c, dtype)), 0.1, 1e-5)
    return e, norm, Tensor(np.ones((c, 1, 3, 3), dtype))


def test_depthwise_stage_names_what_was_wrong():
    e, norm, wd = _stage_args()
    with pytest.raises(ValueError, match=r"expected depthwise weight of shape \(3, 1, 3, 3\), "
                                         r"got \(3, 1, 5, 5\)"):
        F.depthwise_stage_train(e, norm, Tensor(np.ones((3, 1, 5, 5), np.float32)), 1, norm)
    with pytest.raises(ValueError, match="expected stride 1 or 2, got 3"):
        F.depthwise_stage_train(e, norm, wd, 3, norm)
    for bad_dilation in (0, 2.0, True, (2, 2)):
        with pytest.raises(ValueError, match="expected dilation a positive int, got"):
            F.depthwise_stage_train(e, norm, wd, 1, norm, dilation=bad_dilation)
    with pytest.raises(ValueError, match="expected stride 1 with dilation 2, got stride 2"):
        F.depthwise_stage_train(e, norm, wd, 2, norm, dilation=2)
    bad = (None, None, Tensor(np.ones(4, np.float32)), norm[3], 0.1, 1e-5)
    with pytest.raises(ValueError, match=r"expected norm2 weight of shape \(3,\), got \(4,\)"):
        F.depthwise_stage_train(e, norm, wd, 1, bad)
    with pytest.raises(TypeError, match="expected one floating dtype.*depthwise_weight=float64"):
        F.depthwise_stage_train(e, norm, Tensor(np.ones((3, 1, 3, 3))), 1, norm)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.depthwise_stage_train(Tensor(np.ones((1, 3, 1, 1), np.float32)), norm, wd, 1, norm)
    half = (np.zeros(3, np.float32), None, *norm[2:])
    with pytest.raises(ValueError, match="both norm1 running statistics, or neither"):
        F.depthwise_stage_train(e, half, wd, 1, norm)


@pytest.mark.parametrize("seed", range(4))
def test_depthwise_stage_matches_torch_on_random_shapes(seed):
    """Random batch, channels, odd and even sizes, both strides, on the numba set's fused
    kernel (planes above 256 pixels), in float64."""
    rng = np.random.default_rng(100 + seed)
    n, c = int(rng.integers(1, 4)), int(rng.integers(1, 7))
    h, w = int(rng.integers(17, 30)), int(rng.integers(17, 30))
    stride = int(rng.integers(1, 3))
    e, p, g = _case(n, c, h, w, stride, seed=seed)
    assert stage.stage_supported(e, p["wd"], stride)
    h_ours, grads, running = _ours(e, p, g, stride)
    h_t, grads_t, running_t = _torch_stage(e, p, g, stride)
    assert_close("depthwise_stage_train", h_ours, h_t, TOL64)
    for ours, theirs in zip(grads + running, grads_t + running_t):
        assert_close("depthwise_stage_train random shapes", ours, theirs, TOL64)
