"""Training that diverges: it stops at the step where the numbers stop being numbers, says
where in one line, never saves the non-finite weights, and metrics.json says so in JSON."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import tinymbv2
from tinymbv2 import optim
from tinymbv2.cli import main
from tinymbv2.data import DataLoader, load_dataset
from tinymbv2.models import mobilenet_v2
from tinymbv2.train import TrainingDiverged, fit, load_state

TINY = ["--dataset", "digits", "--width", "0.35", "--epochs", "2", "--no-progress"]


def _strict_json(path):
    """Parse like a strict reader: a bare NaN or Infinity is an error, not a number."""
    def refuse(name):
        raise ValueError(f"{path} holds a bare {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_run_that_diverges_stops_with_one_line_and_exit_code_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--lr", "1e6", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1
    assert re.fullmatch(r"tinymbv2 train: error: training diverged: the loss is (nan|inf) at "
                        r"epoch 1, step \d+ of 17 \(lr \S+\); try a lower learning rate; no "
                        r"checkpoint was written \(no epoch finished\)", err), err
    assert "epoch   1/2" not in captured.out  # it stopped inside the first epoch
    assert not (out / "model.npz").exists()
    metrics = _strict_json(out / "metrics.json")
    diverged = metrics["diverged"]
    assert diverged["epoch"] == 1 and diverged["what"] == "loss" and diverged["steps"] == 17
    assert f"step {diverged['step']} of 17" in err and diverged["loss"] in ("nan", "inf")
    assert metrics["test_accuracy"] is None and metrics["history"]["train_loss"] == []
    assert metrics["diagnosis"].startswith("Diverged:")
    assert "Under-fitting" not in metrics["diagnosis"] and "raise" not in metrics["diagnosis"]
    assert metrics["config"]["lr"] == 1e6


def _setup(n=128, batch=32):
    ds = load_dataset("digits")
    tinymbv2.manual_seed(0)
    model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True,
                         dropout=0.0, seed=0)
    loader = DataLoader(ds.train.images[:n], ds.train.labels[:n], batch, seed=0)
    return ds, model, loader


class PoisonedSGD(optim.SGD):
    """SGD whose gradient of the classifier's bias turns NaN at step ``at`` (1-based,
    counted over the whole run): a non-finite gradient under a finite loss."""

    def __init__(self, params, at, **kw):
        super().__init__(params, **kw)
        self.at, self.steps = at, 0

    def step(self, closure=None):
        self.steps += 1
        if self.steps == self.at:
            for p in self.param_groups[-1]["params"]:
                if p.grad is not None and p.ndim == 1 and p.shape == (10,):
                    p.grad = np.full_like(p.grad, np.nan)
        return super().step(closure)


def _weights(model):
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("at,what,epoch,step", [
    (6, "loss", 2, 3),      # epoch 2, step 2's gradient: step 3's loss is NaN
    (8, "weights", 2, 4),   # the last step of epoch 2: found by the check after the epoch
])
def test_a_non_finite_gradient_stops_the_run_and_the_last_good_checkpoint_stays(
        tmp_path, at, what, epoch, step):
    ds, model, loader = _setup()  # 4 steps per epoch
    params = [{"params": [p for p in model.parameters() if p.ndim > 1]},
              {"params": [p for p in model.parameters() if p.ndim == 1]}]
    opt = PoisonedSGD(params, at=at, lr=0.01, momentum=0.9)
    ckpt = tmp_path / "model.npz"
    snapshots = []  # the weights as each epoch's line is logged, right before its checkpoint
    with pytest.raises(TrainingDiverged) as info:
        fit(model, opt, loader, ds.val, epochs=3, checkpoint_path=ckpt, progress=False,
            log=lambda line: snapshots.append(_weights(model)))
    exc = info.value
    assert isinstance(exc, ValueError)  # the command line's one-line errors
    assert (exc.what, exc.epoch, exc.step, exc.steps) == (what, epoch, step, 4)
    assert str(exc).startswith("training diverged: ") and "\n" not in str(exc)
    assert str(exc).endswith(f"; the last good checkpoint, {ckpt}, holds epoch 1")
    assert len(snapshots) == 1 and exc.history["epoch"] == [1]
    saved = load_state(ckpt)
    assert saved["epoch"] == 1
    for k, v in snapshots[0].items():  # epoch 1's weights, untouched by epoch 2
        np.testing.assert_array_equal(saved["model"][k], v, err_msg=k)
    if what == "weights":
        assert exc.name == "classifier.1.bias" and "classifier.1.bias holds inf or NaN" in str(exc)
        assert exc.record() == {"epoch": 2, "step": 4, "steps": 4, "what": "weights",
                                "lr": 0.01, "parameter": "classifier.1.bias"}
    else:
        assert "the loss is nan at epoch 2, step 3 of 4 (lr 0.01)" in str(exc)
        assert exc.record() == {"epoch": 2, "step": 3, "steps": 4, "what": "loss",
                                "lr": 0.01, "loss": "nan"}


def test_a_non_finite_loss_never_reaches_the_weights():
    ds, model, loader = _setup()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    seen = []  # the weights each step's forward pass used

    def loss_fn(logits, labels, reduction="mean"):
        seen.append(_weights(model))
        loss = tinymbv2.functional.cross_entropy(logits, labels, reduction=reduction)
        return loss * float("inf") if len(seen) == 3 else loss

    with pytest.raises(TrainingDiverged, match=r"the loss is (inf|nan) at epoch 1, step 3 of 4"):
        fit(model, opt, loader, None, epochs=1, loss_fn=loss_fn, progress=False, log=None)
    assert not np.array_equal(seen[1]["classifier.1.weight"], seen[2]["classifier.1.weight"])
    for k, v in _weights(model).items():  # step 3 was not taken: step 3's forward weights
        np.testing.assert_array_equal(v, seen[2][k], err_msg=k)
