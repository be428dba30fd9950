"""Resuming a run: what may change (more epochs, the folder, fusion) works, with the schedule
stretched to the new length; what defines the run (optimizer, schedule, dataset, width, ...)
is refused in one line naming the field and both values."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from tinymbv2 import optim
from tinymbv2.autograd import Tensor
from tinymbv2.cli import main
from tinymbv2.train import TrainConfig, load_state
from tinymbv2.train.config import RESUMABLE, resume_conflicts

# digits at width 0.35: 17 steps of 64 images per epoch; the default one-cycle schedule, to
# a peak lr of 0.1 (the classifier's; the digits' own default is 0.05)
RUN = ["--dataset", "digits", "--width", "0.35", "--lr", "0.1", "--no-progress"]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A finished two-epoch one-cycle run (SGD)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    assert main(["train", *RUN, "--epochs", "2", "--out", str(out)]) == 0
    return out / "model.npz"


def _one_cycle_lr(total_steps, at):
    """The lr a fresh one-cycle schedule (the run's: max_lr 0.1) gives after ``at`` steps."""
    opt = optim.SGD([Tensor(np.zeros(1))], lr=0.1, momentum=0.9, nesterov=True)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total_steps)
    for _ in range(at):
        sched.step()
    return opt.param_groups[0]["lr"]


def test_more_epochs_extend_a_one_cycle_run_stretched_to_the_new_length(two_epochs, tmp_path,
                                                                         capsys):
    out = tmp_path / "longer"
    # another folder and the plain model: both may change on resume
    assert main(["train", *RUN, "--epochs", "3", "--out", str(out), "--no-fuse",
                 "--resume", str(two_epochs)]) == 0
    capsys.readouterr()
    state = load_state(out / "model.npz")
    assert state["epoch"] == 3 and state["config"]["epochs"] == 3
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history["epoch"] == [1, 2, 3]
    # epochs 1-2 ran on the 2-epoch cycle (34 steps); epoch 3 starts at step 34 of 51
    assert history["lr"][:2] == load_state(two_epochs)["extra"]["history"]["lr"]
    assert history["lr"][2] == pytest.approx(_one_cycle_lr(51, 34), rel=1e-12)
    assert history["lr"][2] > 10 * _one_cycle_lr(34, 34)  # not held at the old cycle's end
    assert state["scheduler"]["total_steps"] == 51 and state["scheduler"]["last_epoch"] == 51
    assert all(math.isfinite(v) for v in history["train_loss"])


@pytest.mark.parametrize("change,message", [
    (["--optimizer", "adam"], "optimizer 'sgd', this run asks for 'adam'"),
    (["--schedule", "cosine"], "schedule 'onecycle', this run asks for 'cosine'"),
    (["--width", "0.5"], "width 0.35, this run asks for 0.5"),
    (["--batch-size", "32"], "batch_size 64, this run asks for 32"),
    (["--seed", "1"], "seed 0, this run asks for 1"),
    (["--lr", "0.2"], "lr 0.1, this run asks for 0.2"),
    (["--shift", "2"], "shift 0, this run asks for 2"),  # digits: the auto shift is 0
    (["--loss", "focal"], "loss 'ce', this run asks for 'focal'"),
    (["--optimizer", "adam", "--schedule", "cosine"],
     "optimizer 'sgd', this run asks for 'adam' (and 1 more: schedule)"),
])
def test_a_setting_that_defines_the_run_may_not_change_on_resume(two_epochs, tmp_path, capsys,
                                                                  change, message):
    ckpt = tmp_path / "model.npz"
    shutil.copy(two_epochs, ckpt)
    before = ckpt.read_bytes()
    assert main(["train", *RUN, "--epochs", "3", *change, "--out", str(tmp_path),
                 "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"tinymbv2 train: error: resume: {ckpt} was trained with {message}; "
                          "a resumed run may change only epochs, out, fuse, data_dir"), err
    assert ckpt.read_bytes() == before  # refused before anything was written
    assert not (tmp_path / "metrics.json").exists()


def test_another_dataset_is_named_on_resume(two_epochs, tmp_path, capsys):
    assert main(["train", "--dataset", "mnist5k", "--width", "0.35", "--epochs", "3",
                 "--no-progress", "--out", str(tmp_path), "--resume", str(two_epochs)]) == 2
    err = capsys.readouterr().err
    assert "was trained with dataset 'digits', this run asks for 'mnist5k' (and " in err
    assert "input_size" in err and len(err.strip().splitlines()) == 1


def test_fewer_epochs_than_trained_are_refused(two_epochs, tmp_path, capsys):
    assert main(["train", *RUN, "--epochs", "1", "--out", str(tmp_path),
                 "--resume", str(two_epochs)]) == 2
    assert (f"resume: {two_epochs} has trained 2 epochs already, more than this run's epochs 1"
            in capsys.readouterr().err)


def test_resume_conflicts_compares_every_field_but_the_resumable_ones():
    before = {**TrainConfig(dataset="digits", shift=0).__dict__, "num_classes": 10,
              "input_size": [8, 8], "norm_mean": [0.3]}
    now = dict(before, epochs=20, out="elsewhere", fuse=False, data_dir="/data")
    assert set(RESUMABLE) == {"epochs", "out", "fuse", "data_dir"}
    assert resume_conflicts(before, now) == []
    now.update(momentum=0.5, input_size=(8, 9))  # a tuple compares with its saved list
    assert resume_conflicts(before, now) == [("momentum", 0.9, 0.5), ("input_size", [8, 8], (8, 9))]
    older = {k: v for k, v in before.items() if k != "flip"}  # saved before "flip" existed
    assert resume_conflicts(older, dict(before)) == []  # its default, False, is compared
    assert resume_conflicts(older, dict(before, flip=True)) == [("flip", False, True)]


@pytest.mark.parametrize("same", [["--channels", "1"], ["--image-size", "8"],
                                  ["--channels", "1", "--image-size", "8"]])
def test_asking_for_what_the_data_already_was_resumes(two_epochs, tmp_path, capsys, same):
    """digits are 1-channel 8x8: --channels 1 and --image-size 8 read the very same images as
    the run that left them out, so resuming with them is the same run (it was refused as
    "trained with channels None, this run asks for 1")."""
    out = tmp_path / "run"
    assert main(["train", *RUN, "--epochs", "3", *same, "--out", str(out),
                 "--resume", str(two_epochs)]) == 0, capsys.readouterr().err
    assert load_state(out / "model.npz")["epoch"] == 3


@pytest.mark.parametrize("change,message", [
    (["--channels", "3"], "in_channels 1, this run asks for 3"),
    (["--image-size", "10"], "input_size [8, 8], this run asks for [10, 10]"),
])
def test_asking_for_other_images_is_named_through_the_data(two_epochs, tmp_path, capsys, change,
                                                           message):
    assert main(["train", *RUN, "--epochs", "3", *change, "--out", str(tmp_path),
                 "--resume", str(two_epochs)]) == 2
    err = capsys.readouterr().err
    assert f"resume: {two_epochs} was trained with {message}" in err, err


def test_resume_conflicts_leaves_channels_and_image_size_to_the_data():
    before = {**TrainConfig(dataset="digits", shift=0).__dict__, "in_channels": 1,
              "input_size": [8, 8]}
    now = dict(before, channels=1, image_size=8)
    assert resume_conflicts(before, now) == []
    assert resume_conflicts(before, dict(now, in_channels=3, input_size=[9, 9])) == [
        ("in_channels", 1, 3), ("input_size", [8, 8], [9, 9])]


def _rewrite_meta(src, dst, change):
    with np.load(src, allow_pickle=False) as data:
        members = {k: data[k] for k in data.files}
    meta = json.loads(str(members["__meta__"]))
    change(meta)
    members["__meta__"] = np.array(json.dumps(meta))
    np.savez(dst, **members)
    return dst


@pytest.mark.parametrize("part", ["extra", "optimizer", "rng_state", "scheduler", "epoch"])
def test_a_partial_checkpoint_is_one_line_on_resume_and_changes_nothing(two_epochs, tmp_path,
                                                                        capsys, part):
    """It was a KeyError traceback (exit code 1) for "extra" and "optimizer", and a resume
    without the random state went on silently, drawing other numbers than the run it
    continued."""
    ckpt = _rewrite_meta(two_epochs, tmp_path / "model.npz", lambda meta: meta.pop(part))
    before = ckpt.read_bytes()
    assert main(["train", *RUN, "--epochs", "3", "--out", str(tmp_path),
                 "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"tinymbv2 train: error: load_checkpoint: {ckpt} holds no "), err
    assert f"(its __meta__ has no {part!r}); not a complete tinymbv2 checkpoint" in err
    assert ckpt.read_bytes() == before and not (tmp_path / "metrics.json").exists()


def test_fit_refuses_a_checkpoint_of_another_configuration_before_loading_it(two_epochs):
    """fit compares the configuration and the epochs from the one read of the file, before
    the model, optimizer or scheduler change."""
    from tinymbv2.data import DataLoader, load_dataset
    from tinymbv2.train import fit
    from tinymbv2.train.build import build_model, build_optimizer, build_scheduler, param_groups

    state = load_state(two_epochs)
    config = TrainConfig.from_saved(state["config"])
    ds = load_dataset("digits")
    model = build_model(config, 1, 10)
    opt = build_optimizer(config, param_groups(model, config.weight_decay))
    loader = DataLoader(ds.train.images, ds.train.labels, config.batch_size)
    sched, interval = build_scheduler(config, opt, len(loader))
    weights = model.state_dict()
    with pytest.raises(ValueError, match=r"resume: .* was trained with width 0\.35, this run asks "
                                         r"for 0\.5"):
        fit(model, opt, loader, None, 3, scheduler=sched, scheduler_interval=interval,
            resume_from=two_epochs, config=dict(state["config"], width=0.5), progress=False,
            log=None)
    with pytest.raises(ValueError, match=r"resume: .* has trained 2 epochs already, more than "
                                         r"this run's epochs 1"):
        fit(model, opt, loader, None, 1, scheduler=sched, scheduler_interval=interval,
            resume_from=two_epochs, progress=False, log=None)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, weights[k], err_msg=k)
    assert opt.state == {} and sched.last_epoch == 0
