"""Parity with torchvision's mobilenet_v2: same keys, same weights -> same logits,
same BatchNorm statistics and same gradients.

Errors are relative to the largest reference magnitude: max|ours - theirs| / max|theirs|.
Train-mode comparisons keep the classifier's Dropout in eval mode on both sides
(everything else trains), so the random masks cannot differ.
"""
import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.mobilenetv2 import MobileNetV2 as TVMobileNetV2

import tinymbv2
from tinymbv2 import Tensor
from torch_twins import randomise_bn, rel
from tinymbv2.models import (
    SEED_ARTICLE_SETTING, from_torchvision, mobilenet_v2, seed_article_net, to_torch_state_dict,
)

torch.set_num_threads(1)
CONFIGS = [(w, k) for w in (1.0, 0.5, 0.35) for k in (10, 1000)]


def _pair(width, classes, seed=0):
    torch.manual_seed(seed)
    tv = randomise_bn(torchvision.models.mobilenet_v2(width_mult=width, num_classes=classes), seed)
    ours = mobilenet_v2(width_mult=width, num_classes=classes, seed=seed)
    ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    return ours, tv


def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("width", [1.4, 1.0, 0.75, 0.5, 0.35])
def test_state_dict_keys_and_shapes_equal_torchvision_both_ways(width):
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(width_mult=width)
    ours = mobilenet_v2(width_mult=width, seed=1)
    theirs = tv.state_dict()
    mine = ours.state_dict()
    assert list(mine) == list(theirs) and len(mine) == 314
    assert all(mine[k].shape == tuple(v.shape) for k, v in theirs.items())
    assert mine["features.0.1.num_batches_tracked"].dtype == np.int64
    assert sum(int(p.size) for p in ours.parameters()) == sum(p.numel() for p in tv.parameters())
    tv.load_state_dict(to_torch_state_dict(ours))  # strict: the reverse direction
    for k, v in tv.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), mine[k], err_msg=k)


@pytest.mark.parametrize("width, classes", CONFIGS)
def test_eval_logits_float32(width, classes):
    ours, tv = _pair(width, classes)
    x = _images((2, 3, 64, 64)).astype(np.float32)
    with tinymbv2.no_grad():
        y = ours.eval()(Tensor(x)).data
    with torch.no_grad():
        ref = tv.eval()(torch.from_numpy(x))
    assert y.dtype == np.float32 and y.shape == (2, classes)
    assert rel(y, ref) <= 1e-4


@pytest.mark.parametrize("width, classes", CONFIGS)
def test_train_mode_logits_statistics_and_gradients_float64(width, classes):
    ours, tv = _pair(width, classes)
    ours.double().train()
    tv.double().train()
    ours.classifier[0].eval()  # Dropout off on both sides (see the module docstring)
    tv.classifier[0].eval()
    x = _images((2, 3, 48, 48))  # 48 px: the last stages still have 2x2 maps
    y = ours(Tensor(x))
    ty = tv(torch.from_numpy(x))
    assert rel(y.data, ty) <= 1e-9

    # BatchNorm running statistics moved identically (num_batches_tracked: 1 everywhere)
    theirs = tv.state_dict()
    for k, v in ours.state_dict().items():
        if k.endswith("num_batches_tracked"):
            assert int(v) == int(theirs[k]) == 1, k
        elif "running" in k:
            assert rel(v, theirs[k]) <= 1e-9, k

    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    tv_params = dict(tv.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in tv.parameters())
    for name, p in ours.named_parameters():
        ref = tv_params[name].grad.numpy()
        if np.abs(ref).max() <= 1e-12 * scale:
            # an exactly-zero gradient: the projection BN's bias in train mode (the next
            # BN removes any per-channel shift), so both sides hold only rounding noise
            assert np.abs(p.grad).max() <= 1e-12 * scale, name
        else:
            assert rel(p.grad, ref) <= 1e-9, name


def test_eval_logits_float32_at_224():
    ours, tv = _pair(1.0, 1000, seed=3)
    x = _images((1, 3, 224, 224), seed=3).astype(np.float32)
    with tinymbv2.no_grad():
        y = ours.eval()(Tensor(x)).data
    with torch.no_grad():
        ref = tv.eval()(torch.from_numpy(x))
    assert rel(y, ref) <= 1e-4


def test_small_input_matches_torchvision_with_patched_strides():
    torch.manual_seed(0)
    tv = randomise_bn(torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10))
    tv.features[0][0].stride = (1, 1)  # stem
    tv.features[2].conv[1][0].stride = (1, 1)  # first block of the 24-channel stage
    ours = mobilenet_v2(0.5, 10, small_input=True)
    ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    x = _images((2, 3, 32, 32)).astype(np.float32)
    with tinymbv2.no_grad():
        y = ours.eval()(Tensor(x)).data
    with torch.no_grad():
        ref = tv.eval()(torch.from_numpy(x))
    assert rel(y, ref) <= 1e-4
    copy = from_torchvision(tv)  # the architecture is read from the modules
    assert copy.features[0][0].stride == (1, 1) and copy.blocks[1].stride == 1
    with tinymbv2.no_grad():
        np.testing.assert_array_equal(copy(Tensor(x)).data, y)


def test_seed_article_net_matches_torchvision_with_its_setting():
    torch.manual_seed(0)
    tv = randomise_bn(TVMobileNetV2(num_classes=10, width_mult=0.5,
                                     inverted_residual_setting=[list(r) for r in SEED_ARTICLE_SETTING]))
    ours = seed_article_net(width_mult=0.5, num_classes=10)
    ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    x = _images((2, 3, 64, 64)).astype(np.float32)
    with tinymbv2.no_grad():
        y = ours.eval()(Tensor(x)).data
    with torch.no_grad():
        ref = tv.eval()(torch.from_numpy(x))
    assert rel(y, ref) <= 1e-4


@pytest.mark.parametrize("width", [1.4, 0.35])
def test_from_torchvision_mirrors_architecture_and_weights(width):
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(width_mult=width, num_classes=7, dropout=0.3).eval()
    ours = from_torchvision(tv)
    assert not ours.training and ours.classifier[0].p == pytest.approx(0.3)
    assert ours.last_channel == tv.last_channel and len(ours.blocks) == 17
    for k, v in tv.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v.numpy(), err_msg=k)


def test_from_torchvision_keeps_patched_blocks_residual_choice_and_float64():
    import torch
    import torchvision

    from tinymbv2.models import from_torchvision

    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=10).eval().double()
    tv.features[2].conv[1][0].stride = (1, 1)  # patched after construction: no residual
    ours = from_torchvision(tv).eval()
    assert ours.features[2].use_res_connect is False
    assert ours.features[0][0].weight.dtype == np.float64
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32))
    with torch.no_grad():
        expected = tv(torch.from_numpy(x)).numpy()
    got = ours(tinymbv2.Tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
