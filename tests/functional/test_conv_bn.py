"""conv2d and batch_norm against PyTorch in float64, on shapes drawn by hypothesis.

Each check uses a random upstream gradient (never ``.sum()``) and runs once per
CPU kernel set; the two sets are also compared with each other in float32.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2.kernels.numba.layout import is_channels_last
from errors import assert_close

TOL64 = 1e-10
SETTINGS = settings(max_examples=30, deadline=None)


def torch_grads(out, upstream, inputs):
    return torch.autograd.grad(out, inputs, torch.from_numpy(upstream))


@st.composite
def conv_cases(draw):
    """A conv problem: mode picks which kernel path conv2d dispatches to."""
    mode = draw(st.sampled_from(["dense", "depthwise", "pointwise", "grouped"]))
    n = draw(st.integers(1, 2))
    if mode == "pointwise":
        ci, co, kh, kw, stride, pad, groups = (
            draw(st.integers(1, 6)), draw(st.integers(1, 6)), 1, 1, (1, 1), (0, 0), 1
        )
    else:
        kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        if mode == "dense":
            ci, co, groups = draw(st.integers(1, 4)), draw(st.integers(1, 5)), 1
        elif mode == "depthwise":
            ci = co = groups = draw(st.integers(1, 6))
        else:
            groups = draw(st.integers(2, 3))
            ci, co = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    h = draw(st.integers(max(1, kh - 2 * pad[0]), 9))
    w = draw(st.integers(max(1, kw - 2 * pad[1]), 9))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(shape=(n, ci, h, w), wshape=(co, ci // groups, kh, kw), stride=stride,
                padding=pad, groups=groups, bias=bias, seed=seed)


@SETTINGS
@given(case=conv_cases())
@pytest.mark.parametrize("kset", ["reference", "numba"])
def test_conv2d_matches_torch(kset, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    w = rng.standard_normal(case["wshape"])
    b = rng.standard_normal(case["wshape"][0]) if case["bias"] else None
    opts = dict(stride=case["stride"], padding=case["padding"], groups=case["groups"])

    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if b is not None else None
    ty = torch.nn.functional.conv2d(tx, tw, tb, **opts)
    g = rng.standard_normal(tuple(ty.shape))
    tgrads = torch_grads(ty, g, [t for t in (tx, tw, tb) if t is not None])

    with tinymbv2.use_kernels(kset):
        mx, mw = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        mb = Tensor(b, requires_grad=True) if b is not None else None
        y = F.conv2d(mx, mw, mb, **opts)
        y.backward(g)
        assert y.dtype == np.float64
        assert_close("conv2d forward", y.data, ty.detach().numpy(), TOL64)
        assert_close("conv2d grad input", mx.grad, tgrads[0].numpy(), TOL64)
        assert_close("conv2d grad weight", mw.grad, tgrads[1].numpy(), TOL64)
        if b is not None:
            assert_close("conv2d grad bias", mb.grad, tgrads[2].numpy(), TOL64)


@pytest.mark.parametrize(
    "shape,wshape,stride,groups,expected",
    [
        ((2, 8, 6, 6), (4, 8, 1, 1), 1, 1, "PointwiseConv2d"),
        ((2, 8, 7, 7), (8, 1, 3, 3), 2, 8, "DepthwiseConv2d"),
        ((2, 3, 9, 9), (8, 3, 3, 3), 2, 1, "DenseConv2d"),
        ((2, 4, 5, 5), (6, 2, 3, 3), 1, 2, "GroupedConv2d"),
        ((2, 4, 5, 5), (8, 1, 3, 3), 1, 4, "GroupedConv2d"),  # depthwise with multiplier 2
    ],
)
def test_conv2d_dispatches_to_the_specialised_kernel(shape, wshape, stride, groups, expected):
    x = Tensor(np.ones(shape), requires_grad=True)
    w = Tensor(np.ones(wshape), requires_grad=True)
    pad = 0 if wshape[-1] == 1 else 1
    y = F.conv2d(x, w, stride=stride, padding=pad, groups=groups)
    assert y._node.function.__name__ == expected


@st.composite
def bn_cases(draw):
    n = draw(st.integers(1, 4))
    c = draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    if n * h * w < 4:  # with M = 2 the exact input gradient is ~0 (pure cancellation)
        n = 4
    return dict(shape=(n, c, h, w), affine=draw(st.booleans()),
                momentum=draw(st.sampled_from([0.1, 0.3, 1.0])),
                seed=draw(st.integers(0, 2**31 - 1)))


@SETTINGS
@given(case=bn_cases())
@pytest.mark.parametrize("kset", ["reference", "numba"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("fused", [None, "relu6", "relu"], ids=["bn", "bn_relu6", "bn_relu"])
def test_batch_norm_matches_torch(kset, training, fused, case):
    """F.batch_norm against torch's; fused: F.batch_norm_relu6 against relu6(batch_norm)
    with gamma and beta large enough that outputs fall below 0, inside, and above 6;
    F.batch_norm_relu against relu(batch_norm)."""
    rng = np.random.default_rng(case["seed"])
    c = case["shape"][1]
    x = rng.standard_normal(case["shape"]) * 3 + 1
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    if fused:
        gamma, beta = gamma * 4, beta + 3
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    mom = case["momentum"]

    tx = torch.tensor(x, requires_grad=True)
    tg, tb = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    affine = case["affine"]
    ty = torch.nn.functional.batch_norm(
        tx, trm, trv, tg if affine else None, tb if affine else None, training, mom, 1e-5
    )
    if fused:
        ty = getattr(torch.nn.functional, fused)(ty)
    g = rng.standard_normal(case["shape"])
    tgrads = torch_grads(ty, g, [tx, tg, tb] if affine else [tx])

    with tinymbv2.use_kernels(kset):
        mx = Tensor(x, requires_grad=True)
        mg, mb = Tensor(gamma, requires_grad=True), Tensor(beta, requires_grad=True)
        mrm, mrv = rm.copy(), rv.copy()
        op = {None: F.batch_norm, "relu6": F.batch_norm_relu6, "relu": F.batch_norm_relu}[fused]
        y = op(mx, mrm, mrv, mg if affine else None, mb if affine else None,
               training=training, momentum=mom, eps=1e-5)
        y.backward(g)
        name = f"batch_norm{'_' + fused if fused else ''} " + ("train" if training else "eval")
        assert_close(f"{name} forward", y.data, ty.detach().numpy(), TOL64)
        assert_close(f"{name} grad input", mx.grad, tgrads[0].numpy(), 1e-9)
        if affine:
            assert_close(f"{name} grad weight", mg.grad, tgrads[1].numpy(), TOL64)
            assert_close(f"{name} grad bias", mb.grad, tgrads[2].numpy(), TOL64)
        assert_close(f"{name} running_mean", mrm, trm.numpy(), TOL64)
        assert_close(f"{name} running_var", mrv, trv.numpy(), TOL64)


@pytest.mark.parametrize("kset", ["reference", "numba"])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_relu6_kinks_match_torch(kset, training):
    """At BatchNorm outputs of exactly 0 and 6 the fused ReLU6 passes no gradient,
    as torch's ReLU6 (hardtanh) does. x = [-1, 0, 1] per channel has mean 0, so
    with gamma = 1 the output at x = 0 is exactly beta: 0 in channel 0, 6 in channel 1."""
    x = np.tile(np.array([-1.0, 0.0, 1.0]).reshape(3, 1, 1, 1), (1, 2, 1, 1))
    gamma, beta = np.ones(2), np.array([0.0, 6.0])
    rm, rv = np.zeros(2), np.full(2, 0.75)  # eval: sqrt(0.75 + 0.25) = 1 exactly
    g = np.random.default_rng(0).standard_normal(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.relu6(torch.nn.functional.batch_norm(
        tx, torch.tensor(rm), torch.tensor(rv), torch.tensor(gamma), torch.tensor(beta),
        training, 0.1, 0.25))
    (tgx,) = torch_grads(ty, g, [tx])
    with tinymbv2.use_kernels(kset):
        mx = Tensor(x, requires_grad=True)
        y = F.batch_norm_relu6(mx, rm.copy(), rv.copy(), Tensor(gamma), Tensor(beta),
                               training=training, eps=0.25)
        y.backward(g)
    assert y.data[1, 0, 0, 0] == 0.0 and y.data[1, 1, 0, 0] == 6.0
    assert mx.grad[1, 0, 0, 0] == tgx[1, 0, 0, 0] and mx.grad[1, 1, 0, 0] == tgx[1, 1, 0, 0]
    np.testing.assert_allclose(mx.grad, tgx.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kset", ["reference", "numba"])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_relu_kink_matches_torch(kset, training):
    """At a BatchNorm output of exactly 0 the fused ReLU passes no gradient, as torch's
    ReLU; large outputs (beta = 1e6) pass it, as no upper bound clamps them."""
    x = np.tile(np.array([-1.0, 0.0, 1.0]).reshape(3, 1, 1, 1), (1, 2, 1, 1))
    gamma, beta = np.ones(2), np.array([0.0, 1e6])
    rm, rv = np.zeros(2), np.full(2, 0.75)
    g = np.random.default_rng(0).standard_normal(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.relu(torch.nn.functional.batch_norm(
        tx, torch.tensor(rm), torch.tensor(rv), torch.tensor(gamma), torch.tensor(beta),
        training, 0.1, 0.25))
    (tgx,) = torch_grads(ty, g, [tx])
    with tinymbv2.use_kernels(kset):
        mx = Tensor(x, requires_grad=True)
        y = F.batch_norm_relu(mx, rm.copy(), rv.copy(), Tensor(gamma), Tensor(beta),
                              training=training, eps=0.25)
        y.backward(g)
    assert y.data[1, 0, 0, 0] == 0.0 and y.data[1, 1, 0, 0] == 1e6
    assert mx.grad[1, 0, 0, 0] == tgx[1, 0, 0, 0]
    np.testing.assert_allclose(mx.grad, tgx.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=0)


def test_batch_norm_sum_check_would_hide_a_wrong_backward():
    """Why a random upstream gradient: through .sum() the input gradient is exactly 0."""
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3, 5, 5)), requires_grad=True)
    F.batch_norm(x, None, None, training=True).sum().backward()
    assert np.max(np.abs(x.grad)) < 1e-12


@pytest.mark.parametrize("case", ["conv", "depthwise", "pointwise", "bn_train", "bn_eval"])
def test_kernel_sets_agree_in_float32(case):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16, 15, 15)).astype(np.float32)
    g = None
    outs = {}
    for kset in ("reference", "numba"):
        with tinymbv2.use_kernels(kset):
            mx = Tensor(x, requires_grad=True)
            if case == "conv":
                w = Tensor(rng.standard_normal((8, 16, 3, 3)).astype(np.float32) if g is None
                           else outs["w"], requires_grad=True)
                y = F.conv2d(mx, w, stride=2, padding=1)
            elif case == "depthwise":
                w = Tensor(rng.standard_normal((16, 1, 3, 3)).astype(np.float32) if g is None
                           else outs["w"], requires_grad=True)
                y = F.conv2d(mx, w, stride=1, padding=1, groups=16)
            elif case == "pointwise":
                w = Tensor(rng.standard_normal((24, 16, 1, 1)).astype(np.float32) if g is None
                           else outs["w"], requires_grad=True)
                y = F.conv2d(mx, w)
            else:
                w = Tensor(rng.random(16).astype(np.float32) + 0.5 if g is None
                           else outs["w"], requires_grad=True)
                rm, rv = np.zeros(16, np.float32), np.ones(16, np.float32)
                y = F.batch_norm(mx, rm, rv, w, None, training=case == "bn_train")
            if g is None:
                g = rng.standard_normal(y.shape).astype(np.float32)
                outs["w"] = w.data
            y.backward(g)
            assert y.dtype == np.float32 and mx.grad.dtype == np.float32
            outs[kset] = (y.data, mx.grad, w.grad)
    for a, b in zip(outs["reference"], outs["numba"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.max(np.abs(b)))


@pytest.mark.parametrize("kset", ["reference", "numba"])
@pytest.mark.parametrize("relu6", [False, True])
@pytest.mark.parametrize("shape,wshape,stride,groups", [
    ((2, 8, 9, 7), (12, 8, 1, 1), 1, 1),        # pointwise
    ((1, 16, 96, 96), (96, 16, 1, 1), 1, 1),    # pointwise, big image: the numba set blocks it
    ((2, 6, 11, 10), (6, 1, 3, 3), 2, 6),       # depthwise, stride 2
    ((2, 70, 5, 5), (70, 1, 3, 3), 1, 70),      # depthwise, small planes (channels-last path)
    ((2, 3, 17, 16), (8, 3, 3, 3), 2, 1),       # the stem
    ((2, 4, 6, 6), (6, 2, 3, 3), 1, 2),         # grouped
])
def test_conv2d_batch_norm_eval_matches_torch(kset, relu6, shape, wshape, stride, groups):
    """Inference's fused conv + BatchNorm-eval (+ ReLU6) against torch's separate ops, and
    against tinymbv2's separate ops, in float64."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(shape), rng.standard_normal(wshape)
    c = wshape[0]
    mean, var = rng.standard_normal(c) * 0.1, rng.uniform(0.5, 2.0, c)
    gamma, beta = rng.standard_normal(c) * 2, rng.standard_normal(c) + 2
    pad = (wshape[2] - 1) // 2
    t = torch.nn.functional
    ty = t.batch_norm(t.conv2d(torch.tensor(x), torch.tensor(w), None, stride, pad, 1, groups),
                      torch.tensor(mean), torch.tensor(var), torch.tensor(gamma), torch.tensor(beta),
                      False, 0.1, 1e-5)
    if relu6:
        ty = t.relu6(ty)
    with tinymbv2.use_kernels(kset), tinymbv2.no_grad():
        fused = F.conv2d_batch_norm_eval(Tensor(x), Tensor(w), stride, pad, groups, mean, var,
                                         Tensor(gamma), Tensor(beta), 1e-5, relu6=relu6)
        separate = F.batch_norm(F.conv2d(Tensor(x), Tensor(w), None, stride, pad, groups=groups),
                                mean, var, Tensor(gamma), Tensor(beta), training=False)
        if relu6:
            separate = F.relu6(separate)
    name = "conv2d_batch_norm_eval" + ("+relu6" if relu6 else "")
    assert_close(f"{name} forward", fused.data, ty.numpy(), TOL64)
    np.testing.assert_allclose(fused.data, separate.data, rtol=1e-13, atol=1e-13)
    layout_ok = fused.data.flags.c_contiguous or is_channels_last(fused.data)  # numba.layout
    assert layout_ok and not fused.requires_grad


def test_conv2d_batch_norm_eval_refuses_to_record_a_graph():
    x, w = Tensor(np.ones((1, 2, 4, 4)), requires_grad=True), Tensor(np.ones((2, 2, 1, 1)))
    one = Tensor(np.ones(2))
    with pytest.raises(RuntimeError, match="conv2d_batch_norm_eval: inference only"):
        F.conv2d_batch_norm_eval(x, w, 1, 0, 1, np.zeros(2), np.ones(2), one, one)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_eval_model_fused_equals_the_separate_layers(dtype, tol):
    """MobileNetV2 in eval mode under no_grad runs conv + BN (+ ReLU6) fused; its logits equal
    those of the layers run one by one (as with grad enabled) up to float rounding."""
    from tinymbv2.models import mobilenet_v2

    model = mobilenet_v2(0.5, 10, seed=3).to(dtype)
    rng = np.random.default_rng(3)
    for m in model.modules():
        if isinstance(m, tinymbv2.nn.BatchNorm2d):
            m.running_mean.data[...] = rng.standard_normal(m.num_features) * 0.1
            m.running_var.data[...] = rng.uniform(0.5, 2.0, m.num_features)
    model.eval()
    x = Tensor(rng.standard_normal((2, 3, 64, 64)).astype(dtype))
    with tinymbv2.no_grad():
        fused = model(x).data
    separate = model(x).data  # grad enabled: the unfused path, graph and all
    scale = np.abs(separate).max()
    assert np.abs(fused - separate).max() <= tol * scale
