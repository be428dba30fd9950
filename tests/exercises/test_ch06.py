"""Chapter 6's checks answer common wrong answers with the hint meant for them."""
import math

import numpy as np

from tinymbv2 import nn
from tinymbv2.exercises import check_init_like_torchvision, check_kaiming_std


def kaiming_std(shape, mode, *, gain=math.sqrt(2), area=True, groups_divide=False):
    kernel = math.prod(shape[2:]) if area else 1
    fan = (shape[1] if mode == "fan_in" else shape[0]) * kernel
    if groups_divide and shape[1] == 1 and mode == "fan_out":
        fan = kernel          # fan_out / groups for a depthwise weight
    return gain / math.sqrt(fan)


def test_kaiming_std_hints():
    assert check_kaiming_std(kaiming_std).message == "correct (14 cases)"
    assert "the ReLU gain sqrt(2) is missing" in check_kaiming_std(
        lambda s, m: kaiming_std(s, m, gain=1.0)).message
    assert "that is the variance 2 / fan" in check_kaiming_std(
        lambda s, m: kaiming_std(s, m) ** 2).message
    assert "the fan counts the kernel area too: fan_out = out x 9 = 288" in check_kaiming_std(
        lambda s, m: kaiming_std(s, m, area=False)).message
    swapped = check_kaiming_std(lambda s, m: kaiming_std(s, "fan_in" if m == "fan_out" else "fan_out"))
    assert "that is the fan_in std; fan_out = 288" in swapped.message
    depthwise = check_kaiming_std(lambda s, m: kaiming_std(s, m, groups_divide=True)).message
    assert "(144, 1, 3, 3), 'fan_out') (a depthwise 3x3 conv)" in depthwise
    assert "it is not divided by the groups" in depthwise


def init(model, rng, *, mode="fan_out", gain="relu", bn=True, classifier_std=0.01, groups=False):
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d):
            out, _, kh, kw = layer.weight.shape
            fan = (out // layer.groups if groups else out) * kh * kw
            if mode == "fan_in":
                fan = layer.weight.shape[1] * kh * kw
            std = (math.sqrt(2) if gain == "relu" else 1.0) / math.sqrt(fan)
            layer.weight.data[...] = rng.normal(0.0, std, layer.weight.shape)
        elif isinstance(layer, nn.BatchNorm2d) and bn:
            layer.weight.data[...] = 1.0
            layer.bias.data[...] = 0.0
        elif isinstance(layer, nn.Linear):
            std = classifier_std if classifier_std else math.sqrt(2 / layer.weight.shape[0])
            layer.weight.data[...] = rng.normal(0.0, std, layer.weight.shape)
            layer.bias.data[...] = 0.0


def test_init_like_torchvision_hints():
    assert check_init_like_torchvision(init).message == "correct (53 cases)"
    assert check_init_like_torchvision(lambda m, rng: m.reset_parameters(rng)).passed
    assert "you used fan_in; torchvision's convs use mode='fan_out'" in \
        check_init_like_torchvision(lambda m, rng: init(m, rng, mode="fan_in")).message
    assert "the ReLU gain sqrt(2) is missing" in \
        check_init_like_torchvision(lambda m, rng: init(m, rng, gain=None)).message
    depthwise = check_init_like_torchvision(lambda m, rng: init(m, rng, groups=True)).message
    assert "features.1.conv.0.0.weight (16, 1, 3, 3)" in depthwise and "divided by the groups" in depthwise
    assert "classifier.1.weight (10, 1280)" in \
        check_init_like_torchvision(lambda m, rng: init(m, rng, classifier_std=None)).message
    assert "features.0.1.weight (BatchNorm gamma)" in \
        check_init_like_torchvision(lambda m, rng: init(m, rng, bn=False)).message
    assert "features.0.0.weight (16, 3, 3, 3) was not re-initialised" in \
        check_init_like_torchvision(lambda m, rng: None).message

    def uniform(model, rng):
        init(model, rng)
        model.features[0][0].weight.data[...] = rng.uniform(0, 1, model.features[0][0].weight.shape)
    assert "the weights' mean is" in check_init_like_torchvision(uniform).message


def test_init_check_accepts_any_seed():
    """A right answer passes whatever generator it draws from: the tolerance is statistical."""
    for seed in range(10):
        answer = lambda model, rng, seed=seed: init(model, np.random.default_rng(seed))  # noqa: E731
        assert check_init_like_torchvision(answer).passed, seed
