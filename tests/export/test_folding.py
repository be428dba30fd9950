"""BatchNorm folding against PyTorch's ``fuse_conv_bn_eval``, in float64, and the pairs a
model folds."""
import numpy as np
import pytest
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from tinymbv2 import Tensor, nn, no_grad
from tinymbv2.export import conv_bn_pairs, fold_bn, fold_model
from tinymbv2.models import mobilenet_v2


def _torch_pair(rng, cin, cout, k, groups, bias):
    conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=bias).double()
    bn = torch.nn.BatchNorm2d(cout, eps=float(rng.choice([1e-5, 1e-3]))).double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(rng.standard_normal(conv.weight.shape)))
        if bias:
            conv.bias.copy_(torch.from_numpy(rng.standard_normal(cout)))
        bn.weight.copy_(torch.from_numpy(rng.uniform(0.2, 2.0, cout)))
        bn.bias.copy_(torch.from_numpy(rng.standard_normal(cout)))
        bn.running_mean.copy_(torch.from_numpy(rng.standard_normal(cout)))
        bn.running_var.copy_(torch.from_numpy(rng.uniform(0.1, 3.0, cout)))
    return conv.eval(), bn.eval()


@pytest.mark.parametrize("kind", ["dense", "depthwise", "grouped", "pointwise"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fold_bn_equals_torch_fuse_conv_bn_eval(kind, bias, seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 7)) * 2
    cin, cout, k, groups = {"dense": (int(rng.integers(1, 5)), c, 3, 1), "depthwise": (c, c, 3, c),
                            "grouped": (c, c, 3, 2), "pointwise": (c, int(rng.integers(1, 9)), 1, 1)}[kind]
    conv, bn = _torch_pair(rng, cin, cout, k, groups, bias)
    fused = fuse_conv_bn_eval(conv, bn)
    weight, bias_ = fold_bn(conv.weight.detach().numpy(), conv.bias.detach().numpy() if bias else None,
                            bn.running_mean.numpy(), bn.running_var.numpy(),
                            bn.weight.detach().numpy(), bn.bias.detach().numpy(), bn.eps)
    assert weight.dtype == np.float64 and weight.shape == tuple(conv.weight.shape)
    np.testing.assert_allclose(weight, fused.weight.detach().numpy(), rtol=1e-13, atol=0)
    np.testing.assert_allclose(bias_, fused.bias.detach().numpy(), rtol=1e-13, atol=1e-14)
    # and the folded conv computes what conv then BN computes
    x = torch.from_numpy(rng.standard_normal((2, cin, 5, 5)))
    y = torch.nn.functional.conv2d(x, torch.from_numpy(weight), torch.from_numpy(bias_),
                                   padding=k // 2, groups=groups)
    np.testing.assert_allclose(y.numpy(), bn(conv(x)).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_fold_bn_keeps_float32_and_checks_shapes():
    w = np.ones((4, 1, 3, 3), np.float32)
    weight, bias = fold_bn(w, None, np.zeros(4), np.full(4, 3.0), None, None, 1.0)
    assert weight.dtype == bias.dtype == np.float32
    np.testing.assert_allclose(weight, 0.5)  # gamma 1 / sqrt(3 + 1)
    np.testing.assert_allclose(bias, 0.0)
    with pytest.raises(ValueError, match=r"running_var of shape \(4,\).*got \(3,\)"):
        fold_bn(w, None, np.zeros(4), np.ones(3), None, None, 1e-5)


def test_a_models_pairs_are_every_conv_before_a_batch_norm():
    model = mobilenet_v2(0.35, num_classes=3, small_input=True, seed=0)
    pairs = conv_bn_pairs(model)
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [p[0] for p in pairs] == convs  # every conv of MobileNetV2 has a BN after it
    assert pairs[0][0] == "features.0.0" and pairs[0][2] == "features.0.1"
    assert pairs[-1][0] == "features.18.0" and pairs[2][2] == "features.1.conv.2"
    assert len(pairs) == 52  # stem, 17 blocks (2 or 3 convs), head: 1 + 2 + 16 * 3 + 1


def test_fold_model_agrees_with_the_model_in_eval_mode():
    rng = np.random.default_rng(0)
    model = mobilenet_v2(0.35, num_classes=3, small_input=True, seed=0).double().eval()
    stem, bn = model.features[0][0], model.features[0][1]
    bn.running_mean.data[...] = rng.standard_normal(bn.num_features)
    bn.running_var.data[...] = rng.uniform(0.5, 2.0, bn.num_features)
    bn.weight.data[...] = rng.uniform(0.5, 2.0, bn.num_features)
    weight, bias, bn_name = fold_model(model)["features.0.0"]
    assert bn_name == "features.0.1"
    assert stem.weight.data is not weight  # the model is left as it was
    x = Tensor(rng.standard_normal((2, 3, 8, 8)))
    with no_grad():
        expected = bn(stem(x)).data
        conv = nn.Conv2d(3, stem.out_channels, 3, padding=1, dtype=np.float64)
        conv.weight.data[...], conv.bias.data[...] = weight, bias
        got = conv(x).data
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
