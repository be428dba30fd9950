"""The expansion ratio t as an argument of ``mobilenet_v2`` (``expand_ratio``).

None keeps Table 2 (t = 1, then 6); an int t replaces the 6 of blocks 2-17. Each t is
compared with torchvision's ``mobilenet_v2(inverted_residual_setting=...)`` built with the
same t: parameter count, keys, float64 logits in both modes and the gradient; the
multiply-adds grow linearly in t by the slope the block's formula gives; the fused view
equals the plain model.
"""
import numpy as np
import pytest
import torch
import torchvision

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2.fusion import fuse
from tinymbv2.models import TABLE2, mobilenet_v2, summary
from torch_twins import randomise_bn, rel

torch.set_num_threads(1)


def _setting(t):
    return [[1, 16, 1, 1]] + [[t, c, n, s] for _, c, n, s in TABLE2[1:]]


def test_none_is_table2_and_6_is_the_same_network():
    plain, six = mobilenet_v2(seed=0), mobilenet_v2(expand_ratio=6, seed=0)
    assert [b.expand_ratio for b in plain.blocks] == [1] + [6] * 16
    assert plain.inverted_residual_setting == six.inverted_residual_setting == list(TABLE2)
    assert list(plain.state_dict()) == list(six.state_dict())
    for (k, a), b in zip(plain.state_dict().items(), six.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


@pytest.mark.parametrize("t", [1, 2, 3, 6, 8])
def test_parameter_count_and_keys_equal_torchvision(t):
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(inverted_residual_setting=_setting(t))
    ours = mobilenet_v2(expand_ratio=t, seed=0)
    assert [b.expand_ratio for b in ours.blocks] == [1] + [t] * 16
    assert list(ours.state_dict()) == list(tv.state_dict())
    assert all(ours.state_dict()[k].shape == tuple(v.shape) for k, v in tv.state_dict().items())
    assert sum(int(p.size) for p in ours.parameters()) == sum(p.numel() for p in tv.parameters())


@pytest.mark.parametrize("t", [1, 2, 4])
def test_logits_and_gradients_equal_torchvision_float64(t):
    torch.manual_seed(t)
    tv = randomise_bn(torchvision.models.mobilenet_v2(
        width_mult=0.35, num_classes=10, inverted_residual_setting=_setting(t)), t)
    ours = mobilenet_v2(width_mult=0.35, num_classes=10, expand_ratio=t, seed=0)
    ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    ours.double().train()
    tv.double().train()
    ours.classifier[0].eval()  # Dropout off on both sides: the masks could not agree
    tv.classifier[0].eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 48, 48))
    y, ty = ours(Tensor(x)), tv(torch.from_numpy(x))
    assert rel(y.data, ty) <= 1e-9
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    theirs = dict(tv.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in tv.parameters())
    for name, p in ours.named_parameters():
        ref = theirs[name].grad.numpy()
        if np.abs(ref).max() <= 1e-12 * scale:  # a BN bias before a BN: rounding noise only
            assert np.abs(p.grad).max() <= 1e-12 * scale, name
        else:
            assert rel(p.grad, ref) <= 1e-9, name
    ours.eval()
    tv.eval()
    with tinymbv2.no_grad(), torch.no_grad():
        assert rel(ours(Tensor(x)).data, tv(torch.from_numpy(x))) <= 1e-9


def test_multiply_adds_grow_linearly_in_t_by_the_blocks_formula():
    macs = {t: summary(mobilenet_v2(expand_ratio=t, seed=0)).total_macs for t in range(1, 9)}
    params = {t: summary(mobilenet_v2(expand_ratio=t, seed=0)).total_params for t in range(1, 9)}
    assert macs[6] == 300_774_272 and params[6] == 3_504_872  # Table 2
    # per block of rows 2-7, k in, k' out, h x h maps in, stride s: the expansion costs
    # h^2 k^2 t, the depthwise (h/s)^2 9 k t, the projection (h/s)^2 k t k'
    slope, h, k = 0, 112, 16  # after the stem (stride 2) and block 1 (16 channels)
    weights = 0
    for _, c, n, s in TABLE2[1:]:
        for i in range(n):
            stride = s if i == 0 else 1
            out = h // stride
            slope += h * h * k * k + out * out * k * (9 + c)
            weights += k * (k + 9 + c) + 2 * 2 * k  # conv weights, two BNs' weight and bias
            h, k = out, c
    for t in range(2, 9):  # every block of rows 2-7 has its expansion layer from t = 2
        assert macs[t] - macs[2] == (t - 2) * slope, t
        assert params[t] - params[2] == (t - 2) * weights, t
    # t = 1 drops those 16 expansion layers: less than the line through t = 2, 3 gives
    assert macs[1] < 2 * macs[2] - macs[3]
    assert macs[6] / macs[2] > 2.2  # most of the network's cost is in the expanded blocks


@pytest.mark.parametrize("bad", [0, -2, 2.5, 6.0, "6", True])
def test_bad_expansion_ratios_are_refused_naming_the_value(bad):
    with pytest.raises(ValueError, match="expand_ratio") as info:
        mobilenet_v2(expand_ratio=bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("t", [1, 2])
def test_the_fused_view_computes_what_the_plain_model_does(kernel_set, t):
    def build():
        return mobilenet_v2(width_mult=0.35, num_classes=10, small_input=True, seed=4,
                            expand_ratio=t).double()

    model = build()
    view = fuse(model)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32))
    results = []
    for net in (model, view):
        net.train()
        tinymbv2.manual_seed(0)  # the same dropout mask for both
        loss = F.cross_entropy(net(Tensor(x)), np.array([1, 7]))
        model.zero_grad()
        loss.backward()
        grads = np.concatenate([p.grad.ravel() for p in model.parameters()])
        net.eval()
        with tinymbv2.no_grad():
            logits = net(Tensor(x)).numpy().copy()
        results.append((loss.item(), grads, logits))
        model.load_state_dict(build().state_dict())  # the same start for the view
    (loss_a, grads_a, logits_a), (loss_b, grads_b, logits_b) = results
    assert abs(loss_a - loss_b) <= 1e-12 * abs(loss_a)
    assert rel(grads_b, grads_a) <= 1e-12
    assert rel(logits_b, logits_a) <= 1e-12
