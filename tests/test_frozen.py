"""tinymbv2.freeze: a MobileNetV2 frozen for inference (tinymbv2/frozen.py).

The frozen network gives the fused model's logits bit for bit (the same kernels on the
same operands) on both CPU kernel sets, in float32 and float64, and torchvision's to
float64 rounding; it is a snapshot (training the model afterwards leaves it as it was);
and it names what it cannot freeze and what input it expected.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import tinymbv2
from torch_twins import randomise_bn, rel
from tinymbv2.autograd import Tensor
from tinymbv2.frozen import FrozenNet
from tinymbv2.models import mobilenet_v2


def _fused_logits(model, x):
    with tinymbv2.no_grad():
        return tinymbv2.fuse(model)(Tensor(x)).data


def _trained_bn(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters (else eval BN is ~identity)."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, tinymbv2.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.data[...] = 0.1 * rng.standard_normal(c)
            m.running_var.data[...] = rng.uniform(0.5, 1.5, c)
            m.weight.data[...] = 1 + 0.2 * rng.standard_normal(c)
            m.bias.data[...] = 0.1 * rng.standard_normal(c)
    return model


@pytest.mark.parametrize("kernels", ["numba", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", [
    dict(width_mult=0.5, num_classes=10, small_input=True, size=32, batch=3),
    dict(width_mult=1.0, num_classes=1000, small_input=False, size=224, batch=1),
    dict(width_mult=0.35, num_classes=7, small_input=False, size=96, batch=2, in_channels=1),
    dict(width_mult=0.5, num_classes=10, small_input=True, size=32, batch=2, shortcut="none"),
])
def test_the_frozen_net_gives_the_fused_models_logits_bit_for_bit(kernels, dtype, config):
    config = dict(config)
    size, batch = config.pop("size"), config.pop("batch")
    model = _trained_bn(mobilenet_v2(seed=0, **config))
    model = (model.double() if dtype == np.float64 else model).eval()
    channels = config.get("in_channels", 3)
    x = np.random.default_rng(1).standard_normal((batch, channels, size, size)).astype(dtype)
    with tinymbv2.use_kernels(kernels):
        frozen = tinymbv2.freeze(model)
        logits = frozen(x)
        assert np.array_equal(logits, _fused_logits(model, x))
        assert np.array_equal(frozen(Tensor(x)), logits)  # a Tensor in: its data
    assert logits.dtype == dtype and logits.shape == (batch, config["num_classes"])


def test_the_frozen_net_is_torchvisions_network():
    model = mobilenet_v2(width_mult=1.0, num_classes=1000, seed=2).double()
    tv = randomise_bn(torchvision.models.mobilenet_v2(weights=None).double(), seed=3)
    model.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    tv.eval()
    x = np.random.default_rng(4).standard_normal((2, 3, 224, 224))
    with torch.no_grad():
        expected = tv(torch.from_numpy(x))
    assert rel(tinymbv2.freeze(model.eval())(x), expected) < 1e-12


def test_the_frozen_net_is_a_snapshot():
    """Weights and statistics are copied: a change to the model after freezing does not
    reach the frozen net (as an exported file)."""
    model = _trained_bn(mobilenet_v2(width_mult=0.5, num_classes=10, small_input=True, seed=5))
    model.eval()
    x = np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype(np.float32)
    frozen = tinymbv2.freeze(model)
    before = frozen(x)
    for p in model.parameters():
        p.data[...] *= 2
    for m in model.modules():
        if isinstance(m, tinymbv2.nn.BatchNorm2d):
            m.running_mean.data[...] += 1
    assert np.array_equal(frozen(x), before)
    assert not np.allclose(_fused_logits(model, x), before)
    assert np.array_equal(tinymbv2.freeze(model)(x), _fused_logits(model, x))


def test_an_empty_batch_gives_no_logits():
    model = mobilenet_v2(width_mult=0.5, num_classes=10, small_input=True, seed=0).eval()
    assert tinymbv2.freeze(model)(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 10)


@pytest.mark.parametrize("make,error,message", [
    (lambda: tinymbv2.nn.Linear(3, 4), TypeError, "freeze: expected a MobileNetV2, got Linear"),
    (lambda: mobilenet_v2(width_mult=0.5, num_classes=10), ValueError,
     r"must be in eval mode \(call model.eval\(\)\); the model is training"),
    (lambda: mobilenet_v2(width_mult=0.5, num_classes=10, shortcut="expansion").eval(),
     ValueError, "the shortcut between expansions"),
    (lambda: mobilenet_v2(width_mult=0.5, num_classes=10,
                          bottleneck_activation="relu6").eval(),
     ValueError, "features.1 is not the paper's block"),
    (lambda: mobilenet_v2(width_mult=0.5, num_classes=10, activation="relu").eval(),
     ValueError, r"expected features.0 to be Conv2d, BatchNorm2d, ReLU6, got "
                 r"\['Conv2d', 'BatchNorm2d', 'ReLU'\]"),
])
def test_freeze_names_what_it_cannot_freeze(make, error, message):
    with pytest.raises(error, match=message):
        tinymbv2.freeze(make())


def test_freeze_names_a_block_in_training_mode():
    model = mobilenet_v2(width_mult=0.5, num_classes=10).eval()
    model.features[3].train()
    with pytest.raises(ValueError, match="features.3 is training"):
        tinymbv2.freeze(model)


def test_the_frozen_net_names_the_input_it_expected():
    model = mobilenet_v2(width_mult=0.5, num_classes=10, small_input=True, seed=0).eval()
    frozen = tinymbv2.freeze(model)
    assert isinstance(frozen, FrozenNet)
    with pytest.raises(ValueError, match=r"expected images as a numpy array \(N, 3, H, W\), "
                                         r"got ndarray \(2, 1, 32, 32\)"):
        frozen(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"got ndarray \(3, 32, 32\)"):
        frozen(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"got list"):
        frozen([[1.0]])
    with pytest.raises(TypeError, match="expected float32 images .the model's dtype., got "
                                        "float64"):
        frozen(np.zeros((1, 3, 32, 32)))
