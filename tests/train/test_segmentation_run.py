"""A segmentation run through the same trainer and CLI: train, stop, resume bit for bit, the run
folder (metrics.json with the test mIoU, learning curves, masks drawn), eval, predict and
summary, and the configurations a segmenter refuses."""
from __future__ import annotations

import functools
import json
import re

import numpy as np
import pytest
from PIL import Image

from tinymbv2.cli import build_parser, main
from tinymbv2.cli.args import train_config
from tinymbv2.data import load_mnist_scenes
from tinymbv2.evaluation import overlay_mask
from tinymbv2.train import TrainConfig, load_state, load_trained
from tinymbv2.train.config import TASK_DEFAULTS
from tinymbv2.train.run import segmentation_data

# 64 px scenes, width 0.25, ASPP (its image pooling is why a batch of one is refused); 17
# training scenes in batches of 4: the last batch of 1 is dropped
RUN = ["--task", "segment", "--dataset", "mnist-scenes", "--image-size", "64", "--width", "0.25", "--head", "aspp",
       "--train-scenes", "17", "--batch-size", "4", "--lr", "0.05", "--no-progress"]
FEW = functools.partial(load_mnist_scenes, n_val=8, n_test=8)   # the default 250 and 500: slow


@pytest.fixture(autouse=True)
def few_scenes(monkeypatch):
    monkeypatch.setattr("tinymbv2.train.run.load_mnist_scenes", FEW)  # eval reads it too (task_scenes)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("segment") / "straight"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tinymbv2.train.run.load_mnist_scenes", FEW)
        assert main(["train", *RUN, "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_the_run_folder_holds_the_segmenters_scores_and_plots(straight):
    metrics = json.loads((straight / "metrics.json").read_text())
    assert {"test_miou", "test_pixel_accuracy", "per_class_iou", "confusion_matrix",
            "best_val_test_miou"} <= set(metrics)
    assert 0 <= metrics["test_miou"] <= 1 and 0 <= metrics["test_pixel_accuracy"] <= 1
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (11, 11) and cm.sum() == 8 * 64 * 64          # every test pixel once
    assert metrics["test_pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert list(metrics["per_class_iou"]) == ["background", *"0123456789"]
    history = metrics["history"]
    assert history["epoch"] == [1, 2] and len(history["val_miou"]) == 2 and "train_acc" not in history
    assert metrics["config"]["task"] == "segment" and metrics["config"]["num_classes"] == 11
    assert metrics["config"]["head"] == "aspp" and metrics["config"]["output_stride"] == 16
    for name in ("masks.png", "learning_curves.png", "confusion_matrix.png"):
        assert (straight / name).is_file(), name
    assert not (straight / "detections.png").exists()


def test_stopping_and_resuming_gives_the_same_weights_bit_for_bit(straight, tmp_path, capsys):
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
    assert a["train_loss"] == b["train_loss"] and a["val_miou"] == b["val_miou"]
    capsys.readouterr()
    assert main(["train", *RUN, "--epochs", "2", "--head", "simple", "--out", str(out),
                 "--resume", str(out / "model.npz")]) == 2
    assert "was trained with head 'aspp', this run asks for 'simple'" in capsys.readouterr().err


def test_a_last_batch_of_one_is_dropped_and_no_other():
    scenes = FEW(size=32, n_train=17)
    for batch, steps, sizes in ((4, 4, {4}), (3, 6, {3, 2}), (16, 1, {16})):
        data = segmentation_data(TrainConfig(task="segment", dataset="mnist-scenes", batch_size=batch,
                                             train_scenes=17), scenes)
        got = [len(labels) for _, labels in data.loader]
        assert len(data.loader) == len(got) == steps and set(got) == sizes, (batch, got)


def test_eval_predict_and_summary_read_the_segmenter_back(straight, tmp_path, capsys):
    model, config = load_trained(straight / "model.npz")
    assert type(model).__name__ == "DeepLabV3" and config["input_size"] == [64, 64]
    assert (model.head, model.output_stride, model.num_classes) == ("aspp", 16, 11)
    capsys.readouterr()
    assert main(["eval", str(straight / "model.npz"), "--dataset", "mnist-scenes"]) == 0
    printed = capsys.readouterr().out
    final = json.loads((straight / "metrics.json").read_text())
    assert float(re.search(r"mIoU (\d\.\d+)", printed).group(1)) == pytest.approx(final["test_miou"], abs=1e-4)
    assert float(re.search(r"pixel accuracy (\d\.\d+)", printed).group(1)) == pytest.approx(
        final["test_pixel_accuracy"], abs=1e-4)
    assert re.search(r"background\s+\d\.\d{3}", printed)

    scene = FEW(size=64).test.images[0, 0]
    image = tmp_path / "scene.png"
    Image.fromarray((scene * 255).round().astype(np.uint8)).save(image)
    assert main(["predict", str(straight / "model.npz"), str(image), "--out-dir", str(tmp_path / "drawn")]) == 0
    printed = capsys.readouterr().out
    drawn = tmp_path / "drawn" / "scene.mask.png"
    assert re.match(r".*scene\.png: \w+ \d+\.\d%", printed) and drawn.is_file()
    shares = [float(v) for v in re.findall(r"(\d+\.\d)%", printed)]
    assert sum(shares) == pytest.approx(100, abs=0.1 * len(shares))
    # the PNG's pixels are the blend of the image and the predicted mask's colours
    from tinymbv2.evaluation import predict_masks
    found = predict_masks(model, config, [image])[0]
    want = overlay_mask(found["image"], found["mask"], 0.5)
    np.testing.assert_array_equal(np.asarray(Image.open(drawn)), want)
    assert main(["eval", str(straight / "model.npz"), "--dataset", "digits"]) == 2
    assert "holds a segmenter; evaluate it on --dataset mnist-scenes, not digits" in capsys.readouterr().err
    assert main(["predict", str(straight / "model.npz"), str(image), "--alpha", "2"]) == 2
    assert "predict: expected --alpha in [0, 1], got 2.0" in capsys.readouterr().err


def test_summary_of_the_segmenter_prints_table_7_beside_ours(capsys):
    assert main(["summary", "--task", "segment", "--head", "simple", "--output-stride", "16",
                 "--classes", "21", "--resolution", "512"]) == 0
    printed = capsys.readouterr().out
    assert "total parameters:    2,113,557" in printed               # the paper's 2.11M
    assert "Table 7 (the paper, MNet V2*, without ASPP, output stride 16, 512 px): 2.11M" in printed
    assert main(["summary", "--task", "segment", "--head", "lraspp", "--classes", "11",
                 "--resolution", "64"]) == 0
    assert "Table 7" not in capsys.readouterr().out
    assert main(["summary", "--task", "segment", "--small-input"]) == 2


@pytest.mark.parametrize("fields,message", [
    (dict(task="segment", dataset="mnist5k"), r"task 'segment' takes dataset in \('mnist-scenes',\)"),
    (dict(task="segment", dataset="mnist-scenes", loss="focal"),
     r"task 'segment' takes loss in \('ce', 'dice', 'ce\+dice'\) .*focal is the classifier's.*got 'focal'"),
    (dict(task="segment", dataset="mnist-scenes", flip=True), "takes flip in"),
    (dict(task="segment", dataset="mnist-scenes", shift=2), "no shift or flip"),
    (dict(task="segment", dataset="mnist-scenes", batch_size=1, head="aspp"),
     "task 'segment' with head 'aspp' needs batch_size >= 2.*got batch_size 1"),
    (dict(task="segment", dataset="mnist-scenes", batch_size=1, head="simple"), "head 'simple' needs batch_size >= 2"),
    (dict(head="simple"), "head is for task 'segment' .*got 'simple' for task 'classify'"),
    (dict(task="detect", dataset="mnist-scenes", output_stride=8),
     "output_stride is for task 'segment' .*got 8 for task 'detect'"),
    (dict(task="segment", dataset="mnist-scenes", output_stride=12), r"expected output_stride in \(16, 8\), got 12"),
    (dict(task="segment", dataset="mnist-scenes", head="fcn"), r"expected head in \('aspp', 'simple', 'lraspp'\)"),
    (dict(loss="ce+dice"), "loss 'ce\\+dice' is for task 'segment'"),
])
def test_segmentation_configs_that_cannot_work_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields).validate()


def test_lraspp_at_output_stride_8_trains_on_batches_of_one_with_ce_and_dice(tmp_path):
    for loss in ("ce", "dice", "ce+dice"):
        TrainConfig(task="segment", dataset="mnist-scenes", loss=loss).validate()
    out = tmp_path / "lraspp"
    assert main(["train", *RUN, "--train-scenes", "3", "--batch-size", "1", "--head", "lraspp",
                 "--output-stride", "8", "--loss", "ce+dice", "--epochs", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["head"] == "lraspp" and metrics["config"]["output_stride"] == 8
    assert metrics["config"]["loss"] == "ce+dice" and np.isfinite(metrics["history"]["train_loss"][0])
    model, _ = load_trained(out / "model.npz")
    assert (model.head, model.output_stride) == ("lraspp", 8)


def test_the_segment_recipe_comes_from_task_defaults_and_the_command_line(capsys):
    segment = TrainConfig(task="segment", dataset="mnist-scenes")
    for name, value in TASK_DEFAULTS["segment"].items():
        assert getattr(segment, name) == value
    parser = build_parser()
    args = parser.parse_args(["train", "--task", "segment", "--dataset", "mnist-scenes", "--head", "lraspp",
                              "--output-stride", "8", "--loss", "ce+dice", "--lr", "0.2"])
    config = train_config(args, "o")
    assert config == TrainConfig(task="segment", dataset="mnist-scenes", head="lraspp", output_stride=8,
                                 loss="ce+dice", lr=0.2, out="o")
    with pytest.raises(SystemExit) as info:
        main(["train", "--task", "segment", "--dataset", "mnist-scenes", "--output-stride", "12"])
    assert info.value.code == 2
    assert "argument --output-stride: invalid choice: 12 (choose from 16, 8)" in capsys.readouterr().err


def test_finetune_refuses_a_segmenter_and_the_segment_task(straight, capsys):
    """finetune replaces a classifier's head: a segmentation checkpoint, or --task segment,
    is refused in one line naming what was expected, not a traceback from inside."""
    assert main(["finetune", str(straight / "model.npz"), "--dataset", "digits",
                 "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert f"{straight / 'model.npz'} holds a segment model (task 'segment')" in err
    assert "Traceback" not in err
    assert main(["finetune", str(straight / "model.npz"), "--task", "segment", "--dataset",
                 "mnist-scenes", "--no-progress"]) != 0
    assert "trains a new classifier head (--task classify), got --task segment" in \
        capsys.readouterr().err
