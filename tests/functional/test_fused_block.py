"""The inverted residual block as one inference op (``F.inverted_residual_eval``).

Checked against PyTorch's separate layers in float64, for both CPU kernel sets:
the reference set runs the block layer by layer, the numba set in fused bands
(or layer by layer on planes under ``FUSED_FROM`` pixels of kernels/numba/block.py, and
on the output planes it keeps channels-last: all the small cases below, unless the layout
is switched off, as ``channels_last_max(0)`` does, to send them through the fused bands).
The band kernel itself is checked in ``tests/kernels/test_numba_block.py``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2.fusion import fuse
from tinymbv2.profiler import profile
from tinymbv2.kernels.numba.layout import is_channels_last
from block_cases import block_case, torch_block
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
    parts = block_case(*shape, stride, residual)
    if layout_max is None:
        y = _ours(*parts, stride, residual)
    else:
        with channels_last_max(layout_max):
            y = _ours(*parts, stride, residual)
    expected = torch_block(*parts, stride, residual)
    assert_close("inverted_residual_eval", y, expected, TOL64)
    # C-contiguous, or channels-last where the numba set keeps a small plane so (numba/layout.py)
    assert (y.flags.c_contiguous or is_channels_last(y)) and y.dtype == np.float64


def test_inverted_residual_eval_refuses_to_record_a_graph():
    x, expand, depthwise, project = block_case(1, 2, 4, 4, 2, 2, 1, True)
    w = Tensor(depthwise[0], requires_grad=True)
    with pytest.raises(RuntimeError, match="inverted_residual_eval: inference only"):
        F.inverted_residual_eval(Tensor(x), None if expand is None else
                                 (Tensor(expand[0]), expand[1]), (w, depthwise[1]),
                                 (Tensor(project[0]), project[1]), 1, True)


def _model_and_input():
    from tinymbv2.models import mobilenet_v2

    model = mobilenet_v2(0.5, 10, seed=5).to(np.float64)
    rng = np.random.default_rng(5)
    for m in model.modules():
        if isinstance(m, tinymbv2.nn.BatchNorm2d):
            m.running_mean.data[...] = rng.standard_normal(m.num_features) * 0.1
            m.running_var.data[...] = rng.uniform(0.5, 2.0, m.num_features)
    return model.eval(), Tensor(rng.standard_normal((2, 3, 48, 48)))


def _block_ops(block, h):
    with profile() as prof:
        y = block(h).data
    return y, prof.calls.get(("InvertedResidualEval", "forward"), 0)


def test_blocks_run_fused_only_in_inference_with_their_own_layers():
    """A fused block (tinymbv2.fuse) runs as one op only without a graph, with its BatchNorms
    in eval mode and the layers it was built with; else layer by layer, as the plain block."""
    model, x = _model_and_input()
    block = fuse(model).features[2]
    h = Tensor(np.random.default_rng(0).standard_normal((1, block.inp, 12, 12)))
    with tinymbv2.no_grad():
        assert _block_ops(block, h)[1] == 1
    assert _block_ops(block, h)[1] == 0                      # grad enabled: layer by layer
    with tinymbv2.no_grad():
        block.train()
        assert _block_ops(block, h)[1] == 0                  # BatchNorm in train mode
        block.eval()
        block.conv[1][2] = tinymbv2.nn.ReLU()                # a swapped activation ...
        y, calls = _block_ops(block, h)
        assert calls == 0                                    # ... runs layer by layer
    expand, depthwise, project_conv, project_norm = block.conv
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
    with tinymbv2.no_grad(), profile() as prof:
        ours = fuse(model)(x).data
    with torch.no_grad():
        expected = tv(torch.tensor(x.data)).numpy()
    assert_close("MobileNetV2 eval (fused blocks)", ours, expected, TOL64)
    assert prof.calls[("InvertedResidualEval", "forward")] == 17
