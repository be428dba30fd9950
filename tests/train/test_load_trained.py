"""tinymbv2.train.load_trained, through eval, predict and finetune: a checkpoint with
non-finite weights, or a saved configuration without a field they need, is refused in one
line naming the file and the array or the field (exit code 2)."""
from __future__ import annotations

import numpy as np
import pytest

from tinymbv2.cli import main
from tinymbv2.data import Normalize, load_dataset
from tinymbv2.train import TrainConfig, load_state, load_trained, save_checkpoint
from tinymbv2.train.build import NEEDED, build_model
from tinymbv2.train.config import saved_config


def _checkpoint(path, poison=None, drop=()):
    """An untrained digits model at width 0.35 with a complete saved configuration; ``poison``
    a state_dict key to fill with NaN, ``drop`` fields to leave out of the configuration."""
    ds = load_dataset("digits")
    config = TrainConfig(dataset="digits", width=0.35, dropout=0.0).resolved(8, 8)
    model = build_model(config, 1, 10)
    if poison is not None:
        state = model.state_dict()
        model.load_state_dict({**state, poison: np.full_like(state[poison], np.nan)})
    saved = saved_config(config, ds, Normalize.from_data(ds.train.images))
    return save_checkpoint(path, model, config={k: v for k, v in saved.items() if k not in drop})


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "digit.png"
    Image.fromarray((load_dataset("digits").test.images[0, 0] * 255).astype(np.uint8)).save(path)
    return str(path)


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return code, err


@pytest.mark.parametrize("poison", ["features.4.conv.1.0.weight",
                                    "features.2.conv.0.1.running_var"])
def test_eval_predict_and_finetune_refuse_non_finite_weights(tmp_path, capsys, image, poison):
    ckpt = _checkpoint(tmp_path / "nan.npz", poison=poison)
    expected = (f"load_trained: {ckpt}: {poison} holds inf or NaN values (the weights of a "
                f"diverged run); retrain with a lower learning rate")
    for command, argv in [("eval", ["eval", str(ckpt), "--dataset", "digits"]),
                          ("predict", ["predict", str(ckpt), image]),
                          ("finetune", ["finetune", str(ckpt), "--epochs", "1", "--no-progress",
                                        "--out", str(tmp_path / "ft")])]:
        code, err = _run(argv, capsys)
        assert (code, err) == (2, f"tinymbv2 {command}: error: {expected}")
    with pytest.raises(ValueError, match="holds inf or NaN"):
        load_trained(ckpt)


@pytest.mark.parametrize("drop,named", [
    (("norm_mean",), "'norm_mean', which"),
    (("in_channels",), "'in_channels', which"),
    (("input_size", "norm_std"), "'input_size' (nor norm_std), which"),
])
def test_a_saved_configuration_without_a_needed_field_is_named(tmp_path, capsys, image, drop,
                                                               named):
    ckpt = _checkpoint(tmp_path / "partial.npz", drop=drop)
    for command, argv in [("eval", ["eval", str(ckpt), "--dataset", "digits"]),
                          ("predict", ["predict", str(ckpt), image])]:
        code, err = _run(argv, capsys)
        assert code == 2
        assert err.startswith(f"tinymbv2 {command}: error: load_trained: {ckpt}: its saved "
                              f"configuration has no {named}"), err


def test_every_needed_field_is_checked_and_a_complete_checkpoint_loads(tmp_path):
    for field in NEEDED:
        ckpt = _checkpoint(tmp_path / f"without_{field}.npz", drop=(field,))
        with pytest.raises(ValueError, match=f"has no '{field}'"):
            load_trained(ckpt)
    model, cfg = load_trained(_checkpoint(tmp_path / "whole.npz"))
    assert cfg["shift"] == 0 and cfg["norm_mean"] and not model.training


@pytest.mark.parametrize("field,value,named", [
    ("arch", "resnet", "expected arch in ('mobilenet_v2', 'seed_article'), got 'resnet'"),
    ("width", "abc", "train: width must be a real number, got 'abc'"),
    ("small_input", "yes", "expected small_input True or False, got 'yes'"),
    ("in_channels", 0, "expected in_channels an integer >= 1, got 0"),
    ("input_size", [8], "expected input_size [height, width] in pixels, got [8]"),
    ("norm_std", [0.3, 0.3], "expected norm_std a list of 1 numbers (one per channel)"),
])
def test_a_saved_configuration_a_run_would_refuse_is_one_line_naming_the_file(
        tmp_path, capsys, image, field, value, named):
    """"arch": "resnet" used to build seed_article_net (the else branch), then fail on 257
    keys; "width": "abc" gave an error that did not name the file."""
    good = _checkpoint(tmp_path / "good.npz")
    state = load_state(good)
    bad = save_checkpoint(tmp_path / "bad.npz", build_model(TrainConfig(width=0.35, dropout=0.0),
                                                            1, 10),
                          config=dict(state["config"], **{field: value}))
    expected = f"load_trained: {bad}: its saved configuration is not one a training run writes ("
    with pytest.raises(ValueError) as info:
        load_trained(bad)
    assert str(info.value).startswith(expected) and named in str(info.value)
    for command, argv in [("eval", ["eval", str(bad), "--dataset", "digits"]),
                          ("predict", ["predict", str(bad), image])]:
        code, err = _run(argv, capsys)
        assert code == 2 and err.startswith(f"tinymbv2 {command}: error: {expected}"), err


def test_build_model_refuses_an_unknown_arch():
    with pytest.raises(ValueError, match=r"build_model: expected arch in \('mobilenet_v2', "
                                         r"'seed_article'\), got 'resnet'"):
        build_model(TrainConfig(arch="resnet"), 1, 10)
