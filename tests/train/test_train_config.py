"""tinymbv2.train.config and build: the configuration of a run, and a model back from a checkpoint."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tinymbv2.data import Normalize, load_dataset
from tinymbv2.train import TrainConfig, load_trained, save_checkpoint
from tinymbv2.train.build import build_model
from tinymbv2.train.config import saved_config


def test_fuse_is_a_field_on_by_default_and_checked():
    assert TrainConfig().fuse is True
    assert TrainConfig(fuse=False).validate().fuse is False
    with pytest.raises(TypeError, match="train: expected fuse True or False, got 'no'"):
        TrainConfig(fuse="no").validate()
    with pytest.raises(ValueError, match="train: expected optimizer in"):
        TrainConfig(optimizer="lbfgs").validate()


def test_saved_config_holds_the_fields_and_what_the_data_told():
    ds = load_dataset("digits")
    norm = Normalize.from_data(ds.train.images)
    saved = saved_config(TrainConfig(dataset="digits", fuse=False), ds, norm)
    assert saved["fuse"] is False and saved["dataset"] == "digits"
    assert (saved["num_classes"], saved["in_channels"], saved["input_size"]) == (10, 1, [8, 8])
    assert saved["class_names"] == list("0123456789")
    assert saved["norm_mean"] == pytest.approx(norm.mean.tolist())
    assert TrainConfig.from_saved(saved) == TrainConfig(dataset="digits", fuse=False)


def test_a_checkpoint_saved_before_fuse_existed_still_loads(tmp_path):
    config = TrainConfig(width=0.35, dropout=0.0)
    model = build_model(config, in_channels=1, num_classes=10)
    old = {k: v for k, v in dataclasses.asdict(config).items() if k != "fuse"}
    old.update(num_classes=10, in_channels=1, input_size=[8, 8], class_names=list("0123456789"),
               norm_mean=[0.3], norm_std=[0.4])
    path = save_checkpoint(tmp_path / "old.npz", model, config=old)
    loaded, cfg = load_trained(path)
    assert "fuse" not in cfg and TrainConfig.from_saved(cfg).fuse is True
    assert not loaded.training
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v, err_msg=k)
    with pytest.raises(ValueError, match="has no model configuration"):
        load_trained(save_checkpoint(tmp_path / "bare.npz", model))


# the numbers are checked by optim's check_hyper ("must be ..."); lr and width also > 0
@pytest.mark.parametrize("field,value,message", [
    ("lr", float("inf"), "train: lr must be a finite number, got inf"),
    ("lr", float("nan"), "train: lr must be a finite number, got nan"),
    ("lr", 0.0, "train: lr must be > 0, got 0.0"),
    ("momentum", 5.0, r"train: momentum must be in \[0, 1\), got 5.0"),
    ("momentum", 1.0, r"train: momentum must be in \[0, 1\), got 1.0"),
    ("momentum", -0.1, r"train: momentum must be in \[0, 1\), got -0.1"),
    ("weight_decay", float("inf"), "train: weight_decay must be a finite number >= 0, got inf"),
    ("width", float("inf"), "train: width must be a finite number, got inf"),
    ("width", -1.0, "train: width must be > 0, got -1.0"),
    ("dropout", 1.5, r"train: dropout must be in \[0, 1\], got 1.5"),
    ("shift", -1, r"train: expected shift an integer >= 0 \(pixels\) or None"),
    ("channels", 2, "train: expected channels 1, 3 or None"),
    ("epochs", 2.5, "train: expected epochs an integer >= 1, got 2.5"),
    ("image_size", 0, r"train: expected image_size an integer >= 1 \(pixels\) or None"),
    ("seed", -1, "train: expected seed an integer >= 0, got -1"),
])
def test_validate_refuses_non_finite_rates_and_momenta_outside_0_1(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).validate()


def test_validate_refuses_values_of_another_type():
    with pytest.raises(TypeError, match="train: width must be a real number, got 'abc'"):
        TrainConfig(width="abc").validate()
    with pytest.raises(TypeError, match="train: expected small_input True or False, got 0.5"):
        TrainConfig(small_input=0.5).validate()


@pytest.mark.parametrize("argv,message", [
    (["--lr", "inf"], "train: lr must be a finite number, got inf"),
    (["--momentum", "5"], "train: momentum must be in [0, 1), got 5.0"),
    (["--momentum", "1"], "train: momentum must be in [0, 1), got 1.0"),
])
def test_the_train_command_refuses_them_in_one_line(argv, message, tmp_path, capsys):
    from tinymbv2.cli import main

    code = main(["train", "--dataset", "digits", "--epochs", "1", *argv, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"tinymbv2 train: error: {message}"
    assert not (tmp_path / "metrics.json").exists()


def test_shift_is_auto_by_default_scaled_to_the_image_size():
    from tinymbv2.train.config import auto_shift

    assert TrainConfig().shift is None
    assert [auto_shift(s, s) for s in (8, 13, 14, 28, 32, 224)] == [0, 0, 1, 2, 2, 16]
    assert auto_shift(28, 8) == 0  # the shorter side decides
    assert TrainConfig().resolved(28, 28).shift == 2
    assert TrainConfig().resolved(8, 8).shift == 0
    assert TrainConfig(shift=3).resolved(8, 8).shift == 3  # a number given is kept
    resolved = TrainConfig(dataset="digits").resolved(8, 8)
    assert dataclasses.replace(resolved, shift=None) == TrainConfig(dataset="digits")
