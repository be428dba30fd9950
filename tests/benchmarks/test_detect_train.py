"""benchmarks.detect_train mirrors our detection recipe: in float64, a few steps of the
mirror's own functions and of our trainer (fit) end with the same weights, losses,
learning rates and validation mAP."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import detect_train  # noqa: E402
from tinymbv2.data import Normalize, load_mnist_scenes  # noqa: E402
from tinymbv2.evaluation import evaluate_detector  # noqa: E402
from tinymbv2.train.build import build_optimizer, build_scheduler, param_groups  # noqa: E402
from tinymbv2.train.config import TrainConfig, saved_config  # noqa: E402
from tinymbv2.train.tasks import Detection  # noqa: E402
from tinymbv2.train.trainer import fit  # noqa: E402

# two epochs of one step (each its own shuffle and validation), one-cycle SGD (momentum cycled,
# Nesterov), decay on the weights only. Small: at 64 px or with batches of 3, BatchNorm over the
# 1x1 maps of the extra blocks amplifies rounding ~1e3-fold a step (ours fused against ours plain
# too), and after four steps the runs agree to ~1e-8 only; at 96 px with batches of 4 they agree
# to ~1e-13 after two.
CONFIG = TrainConfig(task="detect", dataset="mnist-scenes", image_size=96, width=0.25, epochs=2,
                     batch_size=4, lr=1e-3, weight_decay=4e-3, seed=3, out="unused")


class RecordingDetection(Detection):
    """Our detection task, keeping every step's loss."""

    def __init__(self, *args):
        super().__init__(*args)
        self.losses = []

    def loss(self, outputs, indices):
        value = super().loss(outputs, indices)
        self.losses.append(float(value.item()))
        return value


@pytest.fixture(scope="module")
def data():
    scenes = load_mnist_scenes(size=96, n_train=4, n_val=4, n_test=4)
    return detect_train.detection_data(CONFIG, scenes)


def test_the_mirror_ends_with_our_weights_losses_and_scores_float64(data):
    config = CONFIG.resolved(data.size, data.size)
    model = detect_train.our_initial_model(config, data).double()
    optimizer = build_optimizer(config, param_groups(model, config.weight_decay))
    scheduler, interval = build_scheduler(config, optimizer, len(data.loader))
    task = RecordingDetection(data.scenes.train, model, (data.size, data.size))
    history = fit(model, optimizer, data.loader, data.val, config.epochs, scheduler=scheduler,
                  scheduler_interval=interval, progress=False, log=None, fuse=config.fuse, task=task)

    trained = detect_train.train_mirror(config, data, detect_train.our_initial_model(config, data),
                                        dtype=torch.float64, log=None)
    mirror = trained["mirror"]
    assert trained["steps"] == len(task.losses) == 2
    np.testing.assert_allclose(trained["losses"], task.losses, rtol=1e-9)
    assert trained["losses"][0] != trained["losses"][-1]  # it trained
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert [g["lr"] for g in mirror.optimizer.param_groups] == pytest.approx(lrs, rel=1e-12)
    assert [g["momentum"] for g in mirror.optimizer.param_groups] == pytest.approx(
        [g["momentum"] for g in optimizer.param_groups], rel=1e-12)
    assert [g["weight_decay"] for g in mirror.optimizer.param_groups] == [config.weight_decay, 0.0]

    # 1e-9 relative, a running mean to 1e-9 of its layer's spread (sqrt of the running variance:
    # a mean of values that cancel is small, its rounding is not). A bias that the next BatchNorm
    # cancels has a zero gradient in exact arithmetic: its values (and the next layer's running
    # mean) are rounding noise, ~1e-16, held to 1e-14 absolute.
    theirs = {k: v.numpy() for k, v in mirror.tv.state_dict().items()}
    start = detect_train.our_initial_model(config, data).state_dict()
    moved, floats = 0, 0
    for name, value in model.state_dict().items():
        if np.asarray(value).dtype.kind == "f":
            ref = theirs[name]
            if name.endswith("running_mean"):
                ref = np.sqrt(theirs[name.replace("running_mean", "running_var")])
            scale = max(np.abs(ref).max(), 1e-5)
            assert np.abs(value - theirs[name]).max() <= 1e-9 * scale, name
            moved += not np.array_equal(value, start[name])
            floats += 1
    assert moved > 0.8 * floats  # it trained: most weights and statistics moved (356 of 404)

    assert trained["val_map50"] == pytest.approx(history["val_map50"], abs=1e-9)
    assert trained["best_epoch"] == history["best_epoch"]
    figures = detect_train.score_mirror(trained, data, model.num_classes)
    ours = evaluate_detector(model, data.test.images, data.test.targets(np.arange(len(data.test))))
    assert figures["test_map_50"] == pytest.approx(ours["map_50"], abs=1e-9)
    assert figures["test_map"] == pytest.approx(ours["map"], abs=1e-9)
    assert 0 < figures["test_map_50"] < 0.01 and trained["val_map50"][0] > 0  # small, not nothing
    model.load_state_dict(history["best_state"])  # epoch 1 here, not the final weights
    best = evaluate_detector(model, data.test.images, data.test.targets(np.arange(len(data.test))))
    assert figures["best_val_test_map_50"] == pytest.approx(best["map_50"], abs=1e-9)
    assert figures["best_val_test_map_50"] != figures["test_map_50"]


def test_the_optimizer_and_schedule_come_from_our_builders(data):
    config = TrainConfig(task="detect", dataset="mnist-scenes", image_size=64, width=0.25, epochs=3,
                         schedule="cosine", optimizer="adamw", lr=0.01, weight_decay=0.02)
    model = detect_train.our_initial_model(config, data)
    mirror = detect_train.build_mirror(config, model, 5, data.size)
    assert type(mirror.optimizer) is torch.optim.AdamW
    assert [g["weight_decay"] for g in mirror.optimizer.param_groups] == [0.02, 0.0]
    assert [len(g["params"]) for g in mirror.optimizer.param_groups] == [
        len(g["params"]) for g in param_groups(model, 0.02)]
    assert type(mirror.scheduler) is torch.optim.lr_scheduler.CosineAnnealingLR
    assert mirror.scheduler.T_max == 15 and mirror.interval == "batch"
    with pytest.raises(ValueError, match="no torch mirror for RMSpropTF"):
        detect_train.build_mirror(TrainConfig(task="detect", dataset="mnist-scenes", image_size=64,
                                              width=0.25, optimizer="rmsprop-tf"), model, 5, data.size)


def test_a_finished_runs_configuration_is_read_from_its_metrics(data, tmp_path):
    config = TrainConfig(task="detect", dataset="mnist-scenes", image_size=96, width=0.35, epochs=7,
                         batch_size=16, lr=0.2, weight_decay=1e-4, seed=5, out=str(tmp_path))
    normalize = Normalize.from_data(data.scenes.train.images)
    saved = saved_config(config.resolved(96, 96), data.scenes, normalize)
    (tmp_path / "metrics.json").write_text(json.dumps({"config": saved, "test_map_50": 0.5}))
    read, metrics = detect_train.read_run(tmp_path)
    assert read == config.resolved(96, 96) and metrics["test_map_50"] == 0.5
    (tmp_path / "metrics.json").write_text(json.dumps({"config": saved, "diverged": {"what": "loss"}}))
    with pytest.raises(ValueError, match="diverged"):
        detect_train.read_run(tmp_path)
    saved["task"], saved["dataset"] = "classify", "mnist5k"
    (tmp_path / "metrics.json").write_text(json.dumps({"config": saved}))
    with pytest.raises(ValueError, match="is a 'classify' run, not a detection run"):
        detect_train.read_run(tmp_path)


def test_the_table_shows_both_and_the_difference():
    ours = {"test_map_50": 0.70, "test_map": 0.40, "best_val_test_map_50": 0.71,
            "train_seconds": 100.0, "seconds_per_step": 0.5}
    theirs = {"test_map_50": 0.69, "test_map": 0.41, "best_val_test_map_50": 0.70,
              "train_seconds": 50.0, "seconds_per_step": 0.25}
    text = detect_train.table(ours, theirs)
    assert "test mAP@0.5" in text and "0.7000      0.6900        0.0100" in text
    assert "100.0        50.0          50.0" in text
    assert "-" in detect_train.table(None, theirs).splitlines()[1]
