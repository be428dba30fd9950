"""A detection run through the same trainer and CLI: train, stop, resume bit for bit, the run
folder (metrics.json with the test mAP, learning curves, detections drawn), eval and predict."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from tinymbv2.cli import build_parser, main
from tinymbv2.cli.args import train_config
from tinymbv2.data import load_mnist_scenes
from tinymbv2.train import TrainConfig, load_state, load_trained
from tinymbv2.train.config import TASK_DEFAULTS

# 48 px scenes, width 0.35: 32 steps of 64 scenes per epoch
RUN = ["--task", "detect", "--dataset", "mnist-scenes", "--image-size", "48", "--width", "0.35",
       "--train-scenes", "2000", "--batch-size", "64", "--lr", "0.05", "--no-progress"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect") / "straight"
    assert main(["train", *RUN, "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_the_run_folder_holds_the_detectors_scores_and_plots(straight, capsys):
    metrics = json.loads((straight / "metrics.json").read_text())
    assert {"test_map", "test_map_50", "test_map_75", "per_class_ap_50", "best_val_test_map_50"} <= set(metrics)
    assert 0 <= metrics["test_map"] <= metrics["test_map_50"] <= 1
    assert set(metrics["per_class_ap_50"]) <= set("0123456789")
    history = metrics["history"]
    assert history["epoch"] == [1, 2] and len(history["val_map50"]) == 2 and "train_acc" not in history
    assert history["train_loss"][1] < history["train_loss"][0]          # it learns
    assert metrics["config"]["task"] == "detect" and metrics["config"]["num_classes"] == 11
    assert (straight / "detections.png").is_file() and (straight / "learning_curves.png").is_file()
    assert not (straight / "confusion_matrix.png").exists()


def test_stopping_and_resuming_gives_the_same_weights_bit_for_bit(straight, tmp_path):
    out = tmp_path / "halves"
    assert main(["train", *RUN, "--epochs", "2", "--stop-after", "1", "--out", str(out)]) == 0
    assert load_state(out / "model.npz")["epoch"] == 1
    assert main(["train", *RUN, "--epochs", "2", "--out", str(out), "--resume", str(out / "model.npz")]) == 0
    resumed, whole = load_state(out / "model.npz"), load_state(straight / "model.npz")
    assert resumed["epoch"] == whole["epoch"] == 2
    for key, value in whole["model"].items():
        np.testing.assert_array_equal(resumed["model"][key], value, err_msg=key)
    a = json.loads((out / "metrics.json").read_text())["history"]
    b = json.loads((straight / "metrics.json").read_text())["history"]
    assert a["train_loss"] == b["train_loss"] and a["val_map50"] == b["val_map50"]


def test_eval_and_predict_read_the_detector_back(straight, tmp_path, capsys):
    model, config = load_trained(straight / "model.npz")
    assert type(model).__name__ == "SSDLite" and config["input_size"] == [48, 48]
    capsys.readouterr()
    assert main(["eval", str(straight / "model.npz"), "--dataset", "mnist-scenes"]) == 0
    printed = capsys.readouterr().out
    final = json.loads((straight / "metrics.json").read_text())["test_map_50"]
    assert float(re.search(r"mAP@0\.5 (\d\.\d+)", printed).group(1)) == pytest.approx(final, abs=1e-4)
    scene = load_mnist_scenes(size=48).test.images[0, 0]
    image = tmp_path / "scene.png"
    Image.fromarray((scene * 255).round().astype(np.uint8)).save(image)
    assert main(["predict", str(straight / "model.npz"), str(image), "--min-score", "0",
                 "--out-dir", str(tmp_path / "drawn")]) == 0
    printed = capsys.readouterr().out
    assert re.match(r".*scene\.png: \d+ boxes", printed) and (tmp_path / "drawn" / "scene.detections.png").is_file()
    assert main(["eval", str(straight / "model.npz"), "--dataset", "digits"]) == 2
    assert "holds a detector; evaluate it on --dataset mnist-scenes, not digits" in capsys.readouterr().err


@pytest.mark.parametrize("fields,message", [
    (dict(task="detect", dataset="mnist5k"), r"task 'detect' takes dataset in \('mnist-scenes',\)"),
    (dict(task="detect", dataset="mnist-scenes", flip=True), "takes flip in"),
    (dict(task="detect", dataset="mnist-scenes", shift=2), "no shift or flip"),
    (dict(task="detect", dataset="mnist-scenes", loss="focal"), "takes loss in"),
    (dict(dataset="mnist-scenes"), r"mnist-scenes is a dataset of scenes .*\(--task detect, --task segment\)"),
    (dict(task="detect", dataset="mnist-scenes", train_scenes=0), "expected train_scenes an integer >= 1, got 0"),
    (dict(train_scenes=100), "train_scenes is for tasks 'detect' and 'segment'.*got 100 for task 'classify'"),
])
def test_detection_configs_that_cannot_work_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields).validate()


def test_each_task_has_its_own_recipe_and_a_given_value_wins():
    classify, detect = TrainConfig(), TrainConfig(task="detect", dataset="mnist-scenes")
    for name, value in TASK_DEFAULTS["classify"].items():
        assert getattr(classify, name) == value
    for name, value in TASK_DEFAULTS["detect"].items():
        assert getattr(detect, name) == value
    assert classify.train_scenes is None and detect.train_scenes >= 1
    assert (classify.lr, classify.batch_size) != (detect.lr, detect.batch_size)
    given = TrainConfig(task="detect", dataset="mnist-scenes", lr=0.3, epochs=2, train_scenes=50)
    assert (given.lr, given.epochs, given.train_scenes) == (0.3, 2, 50)
    assert given.batch_size == TASK_DEFAULTS["detect"]["batch_size"]


def test_the_command_line_leaves_the_recipe_to_the_task():
    parser = build_parser()
    detect = train_config(parser.parse_args(["train", "--task", "detect", "--dataset", "mnist-scenes"]), "o")
    classify = train_config(parser.parse_args(["train"]), "o")
    assert detect == TrainConfig(task="detect", dataset="mnist-scenes", out="o")
    assert classify == TrainConfig(out="o") and classify.train_scenes is None
    given = train_config(parser.parse_args(["train", "--task", "detect", "--dataset", "mnist-scenes",
                                            "--lr", "0.2", "--train-scenes", "300"]), "o")
    assert (given.lr, given.train_scenes, given.epochs) == (0.2, 300, TASK_DEFAULTS["detect"]["epochs"])


def test_finetune_refuses_a_detector(straight, capsys):
    assert main(["finetune", str(straight / "model.npz"), "--dataset", "digits",
                 "--no-progress"]) != 0
    assert f"{straight / 'model.npz'} holds a detect model (task 'detect')" in \
        capsys.readouterr().err
