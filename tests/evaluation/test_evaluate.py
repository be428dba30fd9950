"""tinymbv2.evaluation.evaluate: an eval-mode pass over a split, through fusion.fuse by default."""
from __future__ import annotations

import numpy as np
import pytest

from fusion_spy import FusedView
import tinymbv2
import tinymbv2.fusion
from tinymbv2.data import load_dataset
from tinymbv2.evaluation import evaluate, model_batch, model_dtype
from tinymbv2.models import mobilenet_v2
from tinymbv2.nn import Module


def _setup(seed=0, init_seed=0):
    ds = load_dataset("digits")
    tinymbv2.manual_seed(seed)
    model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True,
                         dropout=0.2, seed=init_seed)
    return ds, model


def test_evaluate_reports_accuracy_of_its_predictions():
    ds, model, *_ = _setup()
    result = evaluate(model, ds.test.images, ds.test.labels)
    assert result["scores"].shape == (len(ds.test.labels), 10)
    assert result["accuracy"] == pytest.approx(np.mean(result["predictions"] == ds.test.labels))
    assert model.training  # evaluate restores the mode it found


def test_evaluate_runs_the_fused_view_by_default_and_the_plain_model_on_request(monkeypatch):
    ds, model = _setup()
    views = []

    def fuse(m):
        views.append(FusedView(m))
        return views[-1]

    monkeypatch.setattr(tinymbv2.fusion, "fuse", fuse)
    images, labels = ds.test.images[:300], ds.test.labels[:300]
    fused = evaluate(model, images, labels, batch_size=128)
    assert len(views) == 1 and views[0].inner is model and views[0].calls == 3  # 128+128+44
    plain = evaluate(model, images, labels, batch_size=128, fuse=False)
    assert len(views) == 1  # fuse=False: fusion.fuse is not called
    np.testing.assert_array_equal(fused["scores"], plain["scores"])
    assert fused["loss"] == plain["loss"] and model.training


def test_model_batch_has_the_model_dtype():
    _, model = _setup()
    x = model_batch(model, np.zeros((2, 1, 8, 8)))
    assert model_dtype(model) == np.float32
    assert isinstance(x, tinymbv2.Tensor) and x.dtype == np.float32 and x.shape == (2, 1, 8, 8)
    assert model_dtype(Module()) == np.float32
