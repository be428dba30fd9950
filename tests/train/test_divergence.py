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


class OverflowingAdam(optim.Adam):
    """Adam whose second moment of the classifier's bias overflows to inf at step ``at``:
    the parameter's step becomes exp_avg / inf = 0, so it silently stops learning while
    every weight and the loss stay finite."""

    def __init__(self, params, at, **kw):
        super().__init__(params, **kw)
        self.at, self.steps = at, 0

    def step(self, closure=None):
        out = super().step(closure)
        self.steps += 1
        if self.steps == self.at:
            for p in self.param_groups[-1]["params"]:
                if p.ndim == 1 and p.shape == (10,):
                    self.state[id(p)]["exp_avg_sq"][...] = np.inf
        return out


def test_an_optimizer_state_gone_inf_stops_the_run_at_the_epoch_check(tmp_path):
    ds, model, loader = _setup()  # 4 steps per epoch
    params = [{"params": [p for p in model.parameters() if p.ndim > 1]},
              {"params": [p for p in model.parameters() if p.ndim == 1]}]
    opt = OverflowingAdam(params, at=6, lr=0.001)  # epoch 2, step 2
    ckpt = tmp_path / "model.npz"
    with pytest.raises(TrainingDiverged) as info:
        fit(model, opt, loader, ds.val, epochs=3, checkpoint_path=ckpt, progress=False, log=None)
    exc = info.value
    assert (exc.what, exc.epoch, exc.step, exc.steps) == ("optimizer", 2, 4, 4)
    assert exc.name == "exp_avg_sq of classifier.1.bias"
    assert str(exc) == ("training diverged: the optimizer's exp_avg_sq of classifier.1.bias holds "
                        "inf or NaN after epoch 2 (step 4 of 4) (lr 0.001); try a lower learning "
                        f"rate; the last good checkpoint, {ckpt}, holds epoch 1")
    assert exc.record() == {"epoch": 2, "step": 4, "steps": 4, "what": "optimizer", "lr": 0.001,
                            "state": "exp_avg_sq of classifier.1.bias"}
    assert all(np.isfinite(v).all() for v in _weights(model).values())  # the weights look fine
    saved = load_state(ckpt)  # the inf never reached the checkpoint
    assert saved["epoch"] == 1
    assert all(np.isfinite(v["exp_avg_sq"]).all() for v in saved["optimizer"]["state"].values())


def _earlier_run(out):
    """What a finished run leaves in its folder."""
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return {name: (out / name).read_bytes() for name in
            ("model.npz", "learning_curves.png", "confusion_matrix.png")}


def test_a_run_diverging_in_a_folder_of_an_earlier_run_says_whose_checkpoint_is_there(
        tmp_path, capsys):
    out = tmp_path / "run"
    earlier = _earlier_run(out)
    capsys.readouterr()
    assert main(["train", *TINY, "--lr", "1e6", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"tinymbv2 train: error: training diverged: the loss is (nan|inf) at "
                        r"epoch 1, step \d+ of 17 \(lr \S+\); try a lower learning rate; "
                        + re.escape(f"{out / 'model.npz'} is an earlier run's; this run wrote "
                                    "none"), err), err
    assert (out / "model.npz").read_bytes() == earlier["model.npz"]  # kept, and said to be
    # the plots were the earlier run's: removed, so that nothing beside the diverged
    # metrics.json shows curves or a confusion matrix it did not have
    assert not (out / "learning_curves.png").exists()
    assert not (out / "confusion_matrix.png").exists()
    assert _strict_json(out / "metrics.json")["diverged"]["what"] == "loss"


def test_a_resumed_run_that_diverges_before_saving_names_the_file_it_resumed_from(tmp_path):
    ds, model, loader = _setup()
    params = [{"params": [p for p in model.parameters() if p.ndim > 1]},
              {"params": [p for p in model.parameters() if p.ndim == 1]}]
    first = tmp_path / "first" / "model.npz"
    fit(model, PoisonedSGD(params, at=0, lr=0.01, momentum=0.9), loader, None, epochs=3,
        checkpoint_path=first, stop_after=1, progress=False, log=None)  # at=0: never poisoned
    ds, model, loader = _setup()
    params = [{"params": [p for p in model.parameters() if p.ndim > 1]},
              {"params": [p for p in model.parameters() if p.ndim == 1]}]
    opt = PoisonedSGD(params, at=1, lr=0.01, momentum=0.9)  # epoch 2's first step
    second = tmp_path / "second" / "model.npz"
    with pytest.raises(TrainingDiverged) as info:
        fit(model, opt, loader, None, epochs=3, checkpoint_path=second, resume_from=first,
            progress=False, log=None)
    assert str(info.value).endswith(
        f"; no checkpoint was written (no epoch finished); the last good weights are in {first} "
        f"(epoch 1), which this run resumed from")
    assert not second.exists()


def test_where_kept_in_words():
    from tinymbv2.train.trainer import where_kept

    assert where_kept(None, None) is None
    assert where_kept("a/model.npz", 3) == "the last good checkpoint, a/model.npz, holds epoch 3"
    assert where_kept("nowhere/model.npz", None) == "no checkpoint was written (no epoch finished)"
    assert where_kept(None, None, "b.npz", 2) == ("the last good weights are in b.npz (epoch 2), "
                                                  "which this run resumed from")
