"""The inverted residual block as one inference op (``F.inverted_residual_eval``).

Checked against PyTorch's separate layers in float64, for both CPU kernel sets:
the reference set runs the block layer by layer, the numba set in fused bands
(or layer by layer on planes under ``numba_block.FUSED_FROM`` pixels, and on the
output planes it keeps channels-last: all the small cases below, unless the layout is
switched off, as ``channels_last_max(0)`` does, to send them through the fused bands).
"""
from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2.kernels import numba_block
from tinymbv2.kernels.numba_layout import is_channels_last
from errors import assert_close
from kernel_cases import channels_last_max

TOL64 = 1e-10

# (n, ci, h, w, expansion t, co, stride, residual)
CASES = [
    (2, 4, 9, 8, 6, 4, 1, True),       # fused, residual
    (2, 4, 11, 9, 6, 5, 2, False),     # 6x5 output: under FUSED_FROM, layer by layer
    (1, 3, 17, 15, 1, 5, 2, False),    # no expansion, stride 2, odd width
    (2, 6, 16, 16, 1, 6, 1, True),     # no expansion, residual (block 1's shape)
    (1, 8, 20, 19, 6, 8, 2, False),    # stride 2, odd width: the last column reads padding
    (3, 5, 14, 14, 3, 7, 2, False),    # 7x7 output: layer by layer
    (1, 2, 1, 70, 6, 2, 1, True),      # one row
    (9, 3, 10, 10, 6, 3, 1, True),     # small whole images, 3 side by side in the GEMMs
    (8, 4, 19, 17, 2, 6, 2, False),    # ... and 2, at stride 2
    (0, 4, 9, 8, 6, 4, 1, True),       # an empty batch
]


def _bn(rng, c, relu6):
    return (rng.standard_normal(c) * 0.1, rng.uniform(0.5, 2.0, c),
            rng.standard_normal(c) * 2, rng.standard_normal(c) + 2, 1e-5, relu6)


def _case(n, ci, h, w, t, co, stride, residual, seed=0):
    rng = np.random.default_rng(seed)
    ch = ci * t
    x = rng.standard_normal((n, ci, h, w))
    expand = None if t == 1 else (rng.standard_normal((ch, ci, 1, 1)), _bn(rng, ch, True))
    depthwise = (rng.standard_normal((ch, 1, 3, 3)), _bn(rng, ch, True))
    project = (rng.standard_normal((co, ch, 1, 1)), _bn(rng, co, False))
    return x, expand, depthwise, project


def _torch_block(x, expand, depthwise, project, stride, residual):
    f = torch.nn.functional

    def conv_bn(h, part, **conv):
        w, (mean, var, gamma, beta, eps, relu6) = part
        h = f.batch_norm(f.conv2d(h, torch.tensor(w), **conv), torch.tensor(mean),
                         torch.tensor(var), torch.tensor(gamma), torch.tensor(beta),
                         False, 0.1, eps)
        return f.relu6(h) if relu6 else h

    tx = torch.tensor(x)
    h = tx if expand is None else conv_bn(tx, expand)
    h = conv_bn(h, depthwise, stride=stride, padding=1, groups=h.shape[1])
    y = conv_bn(h, project)
    return (tx + y if residual else y).numpy()


def _ours(x, expand, depthwise, project, stride, residual):
    def tensors(part):
        return None if part is None else (Tensor(part[0]), part[1])

    with tinymbv2.no_grad():
        return F.inverted_residual_eval(Tensor(x), tensors(expand), tensors(depthwise),
                                        tensors(project), stride, residual).data


@pytest.mark.parametrize("layout_max", [None, 0], ids=["default-layout", "layout-off"])
@pytest.mark.parametrize("case", CASES)
def test_inverted_residual_eval_matches_torch(kernel_set, case, layout_max):
    *shape, stride, residual = case
    parts = _case(*shape, stride, residual)
    if layout_max is None:
        y = _ours(*parts, stride, residual)
    else:
        with channels_last_max(layout_max):
            y = _ours(*parts, stride, residual)
    expected = _torch_block(*parts, stride, residual)
    assert_close("inverted_residual_eval", y, expected, TOL64)
    # C-contiguous, or channels-last where the numba set keeps a small plane so (numba_layout)
    assert (y.flags.c_contiguous or is_channels_last(y)) and y.dtype == np.float64


@pytest.mark.parametrize("band_bytes", [1, 3000, 20000])
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[4], (2, 3, 23, 12, 4, 3, 1, True)])
def test_numba_block_bands_of_any_height_give_the_same_block(monkeypatch, band_bytes, case):
    """Bands of 1 row up to the whole image (halo rows expanded twice): the same result."""
    *shape, stride, residual = case
    parts = _case(*shape, stride, residual, seed=1)
    expected = _torch_block(*parts, stride, residual)
    monkeypatch.setattr(numba_block, "BAND_BYTES", band_bytes)
    with channels_last_max(0):  # these small planes would otherwise run layer by layer
        y = numba_block.inverted_residual_eval(*parts, stride, residual)
    assert_close("inverted_residual_eval", y, expected, TOL64)
    assert y.flags.c_contiguous


def test_numba_block_runs_channels_last_outputs_layer_by_layer():
    """A 14x14 output (as at 224 px) is kept channels-last and computed layer by layer; with
    the layout off the same block runs in fused bands and comes out NCHW, equal up to rounding."""
    parts = _case(2, 4, 28, 28, 6, 4, 2, False, seed=3)
    layered = numba_block.inverted_residual_eval(*parts, 2, False)
    with channels_last_max(0):
        fused = numba_block.inverted_residual_eval(*parts, 2, False)
    assert is_channels_last(layered) and not layered.flags.c_contiguous
    assert fused.flags.c_contiguous
    assert_close("inverted_residual_eval", layered, fused, TOL64)


def test_numba_block_is_bit_identical_for_any_thread_count():
    x, expand, depthwise, project = _case(4, 8, 40, 36, 6, 8, 1, True, seed=2)
    x, expand, depthwise, project = (
        x.astype(np.float32),
        *((p[0].astype(np.float32), tuple(np.float32(a) if isinstance(a, np.ndarray) else a
                                          for a in p[1])) for p in (expand, depthwise, project)),
    )
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append(numba_block.inverted_residual_eval(x, expand, depthwise, project, 1,
                                                              True))
    finally:
        numba.set_num_threads(before)
    again = numba_block.inverted_residual_eval(x, expand, depthwise, project, 1, True)
    assert results[0].dtype == np.float32
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], again)


def test_inverted_residual_eval_refuses_to_record_a_graph():
    x, expand, depthwise, project = _case(1, 2, 4, 4, 2, 2, 1, True)
    w = Tensor(depthwise[0], requires_grad=True)
    with pytest.raises(RuntimeError, match="inverted_residual_eval: inference only"):
        F.inverted_residual_eval(Tensor(x), None if expand is None else
                                 (Tensor(expand[0]), expand[1]), (w, depthwise[1]),
                                 (Tensor(project[0]), project[1]), 1, True)


@pytest.mark.parametrize("change,message", [
    (lambda p: (p[0], p[1], (p[2][0][:, :, :2], p[2][1]), p[3]),
     r"depthwise weight must have shape \(24, 1, 3, 3\), got \(24, 1, 2, 3\)"),
    (lambda p: (p[0], p[1], p[2], (p[3][0][:, :5], p[3][1])),
     r"project weight must have shape \(Co, 24, 1, 1\), got \(4, 5, 1, 1\)"),
    (lambda p: (p[0], (p[1][0][:, :3], p[1][1]), p[2], p[3]),
     r"expand weight must have shape \(24, 4, 1, 1\), got \(24, 3, 1, 1\)"),
    (lambda p: (p[0].astype(np.float32), *p[1:]),
     r"all arrays must share one dtype, got \{'x': dtype\('float32'\), 'expand': dtype\('float64'\)"),
])
def test_numba_block_names_what_it_expected(change, message):
    parts = change(_case(1, 4, 6, 6, 6, 4, 1, True))
    with pytest.raises((ValueError, TypeError), match=message):
        numba_block.inverted_residual_eval(*parts, 1, True)


def test_numba_block_rejects_a_residual_that_cannot_be_added():
    parts = _case(1, 4, 6, 6, 6, 4, 2, False)
    with pytest.raises(ValueError, match="the residual needs stride 1 and Co = Ci, got stride 2"):
        numba_block.inverted_residual_eval(*parts, 2, True)
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        numba_block.inverted_residual_eval(*parts, 3, False)


def _model_and_input():
    from tinymbv2.models import mobilenet_v2

    model = mobilenet_v2(0.5, 10, seed=5).to(np.float64)
    rng = np.random.default_rng(5)
    for m in model.modules():
        if isinstance(m, tinymbv2.nn.BatchNorm2d):
            m.running_mean.data[...] = rng.standard_normal(m.num_features) * 0.1
            m.running_var.data[...] = rng.uniform(0.5, 2.0, m.num_features)
    return model.eval(), Tensor(rng.standard_normal((2, 3, 48, 48)))


def test_blocks_run_fused_only_in_inference_with_their_own_layers():
    model, x = _model_and_input()
    block = model.features[2]
    h = Tensor(np.random.default_rng(0).standard_normal((1, block.inp, 12, 12)))
    with tinymbv2.no_grad():
        assert block._inference_parts(h) is not None
    assert block._inference_parts(h) is None                   # grad enabled: train path
    with tinymbv2.no_grad():
        block.train()
        assert block._inference_parts(h) is None                   # BatchNorm in train mode
        block.eval()
        block.conv[1][2] = tinymbv2.nn.ReLU()                      # a swapped activation
        assert block._inference_parts(h) is None
        y = block(h).data                                          # ... runs layer by layer
    expand, depthwise, project_conv, project_norm = block.parts
    with tinymbv2.no_grad():
        z = F.relu6(expand[1](expand[0](h)))
        z = F.relu(depthwise[1](depthwise[0](z)))
        expected = project_norm(project_conv(z)).data
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_eval_model_matches_torchvision_with_fused_blocks(kernel_set):
    import torchvision

    from tinymbv2.models.interop import to_torch_state_dict

    model, x = _model_and_input()
    tv = torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10).double()
    tv.load_state_dict(to_torch_state_dict(model))
    tv.eval()
    with tinymbv2.no_grad():
        ours = model(x).data
    with torch.no_grad():
        expected = tv(torch.tensor(x.data)).numpy()
    assert_close("MobileNetV2 eval (fused blocks)", ours, expected, TOL64)
