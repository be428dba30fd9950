"""tinymbv2.train.finetune: a new head, a frozen backbone, frozen BatchNorms kept frozen."""
from __future__ import annotations

import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor, nn, optim
from tinymbv2.data import DataLoader, Split
from tinymbv2.evaluation import evaluate
from tinymbv2.models import mobilenet_v2
from tinymbv2.train import fit
from tinymbv2.train.finetune import (count_trainable, freeze_backbone, replace_classifier,
                                     set_frozen_bn_eval)


def _model():
    return mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)


def test_replace_classifier_gives_a_fresh_head_of_the_new_width():
    model = _model()
    old = model.classifier[1]
    replace_classifier(model, 4, generator=np.random.default_rng(0))
    head = model.classifier[1]
    assert head is not old and (head.in_features, head.out_features) == (old.in_features, 4)
    assert np.all(head.bias.data == 0) and 0.005 < head.weight.data.std() < 0.015
    assert model.num_classes == 4
    with tinymbv2.no_grad():
        assert model.eval()(Tensor(np.zeros((2, 1, 28, 28), np.float32))).shape == (2, 4)
    model.classifier[1] = nn.Identity()
    with pytest.raises(TypeError, match="replace_classifier: expected a Linear last"):
        replace_classifier(model, 4)


def test_freeze_backbone_leaves_the_last_blocks_and_the_head_trainable():
    model = _model()
    trainable = freeze_backbone(model, train_last_blocks=2)
    features = list(model.features)
    assert all(not p.requires_grad for f in features[:-2] for p in f.parameters())
    assert all(p.requires_grad for f in features[-2:] for p in f.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    assert count_trainable(model) == sum(p.size for p in trainable)
    assert count_trainable(model) < sum(p.size for p in model.parameters())
    with pytest.raises(ValueError, match=r"expected train_last_blocks in \[0, 19\], got 20"):
        freeze_backbone(model, 20)


def test_frozen_batchnorms_stay_frozen_through_fit_and_evaluate():
    """Training and evaluating (through the fused view) must leave each BatchNorm in the mode
    set_frozen_bn_eval gave it: frozen ones in eval mode, the others in training mode."""
    model = _model()
    freeze_backbone(model, train_last_blocks=1)
    model.train()
    set_frozen_bn_eval(model)
    frozen = {id(m) for m in model.modules()
              if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad}
    assert len(frozen) == 51  # every BatchNorm but the head's

    def modes():
        return {id(m): m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d)}

    before = modes()
    assert all(not before[k] for k in frozen) and sum(before.values()) == 1
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    labels = np.arange(8) % 10
    evaluate(model, images, labels)
    assert modes() == before
    stats = model.features[3].conv[0][1].running_mean.data.copy()
    opt = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loader = DataLoader(images, labels, batch_size=4, seed=0)

    def train_mode(m):
        m.train()
        set_frozen_bn_eval(m)

    val = Split(images, labels)
    fit(model, opt, loader, val, epochs=1, progress=False, log=None, train_mode=train_mode)
    assert modes() == before
    np.testing.assert_array_equal(stats, model.features[3].conv[0][1].running_mean.data)
