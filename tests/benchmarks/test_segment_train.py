"""benchmarks.segment_train mirrors our segmentation recipe: in float64, a few steps of the
mirror's own functions and of our trainer (fit) end with the same weights, losses, learning
rates and validation and test mIoU, for each head and loss."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import segment_train  # noqa: E402
from tinymbv2 import functional as F  # noqa: E402
from tinymbv2 import nn  # noqa: E402
from tinymbv2.autograd import Tensor  # noqa: E402
from tinymbv2.data import Normalize, load_mnist_scenes  # noqa: E402
from tinymbv2.data.scenes import scaled_digit_sides  # noqa: E402
from tinymbv2.evaluation import evaluate_segmenter  # noqa: E402
from tinymbv2.train.build import build_loss, build_optimizer, build_scheduler, param_groups  # noqa: E402
from tinymbv2.train.config import TrainConfig, saved_config  # noqa: E402
from tinymbv2.train.tasks import Segmentation  # noqa: E402
from tinymbv2.train.trainer import fit  # noqa: E402

SIZE = 64


def _config(head, loss, **kw):
    # two epochs of one step (each epoch its own shuffle and validation), one-cycle SGD
    # (momentum cycled, Nesterov), decay on the weights only, a little label smoothing. Two
    # steps: ASPP's image pooling normalises 1x1 maps, so with batches of 2 its BatchNorm sees
    # two values a channel and amplifies rounding ~1e3-fold a step. Ours against ours, the
    # initial weights scaled by 1 + 1e-14, ends four steps (64 px, ce+dice) with losses 1.6e-7
    # apart; the mirror against ours, 2.3e-6 (LR-ASPP with ce: 3e-13 after four).
    return TrainConfig(task="segment", dataset="mnist-scenes", image_size=SIZE, width=0.25,
                       epochs=2, batch_size=2, lr=1e-2, weight_decay=4e-3, seed=3, head=head,
                       loss=loss, label_smoothing=0.05 if loss != "dice" else 0.0, out="unused",
                       **kw)


class RecordingSegmentation(Segmentation):
    """Our segmentation task, keeping every step's loss."""

    def __init__(self, *args):
        super().__init__(*args)
        self.losses = []

    def loss(self, outputs, indices):
        value = super().loss(outputs, indices)
        self.losses.append(float(value.item()))
        return value


@pytest.fixture(scope="module")
def scenes():
    # task_scenes("segment", 64) with fewer scenes: the digits' sides grow with the canvas
    return load_mnist_scenes(size=SIZE, n_train=2, n_val=3, n_test=3, scale=scaled_digit_sides(SIZE))


def _dropout_off(model):
    """ASPP's dropout p = 0 (its masks cannot be matched across libraries); the twin copies p."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def _initial(config, data):
    return _dropout_off(segment_train.our_initial_model(config, data))


@pytest.mark.parametrize("head, loss, fuse", [("lraspp", "ce", False), ("aspp", "ce+dice", True)])
def test_the_mirror_ends_with_our_weights_losses_and_scores_float64(scenes, head, loss, fuse):
    config = _config(head, loss, fuse=fuse)
    data = segment_train.segmentation_data(config, scenes)
    config = config.resolved(data.size, data.size)
    model = _initial(config, data).double()
    optimizer = build_optimizer(config, param_groups(model, config.weight_decay))
    scheduler, interval = build_scheduler(config, optimizer, len(data.loader))
    loss_fn = build_loss(config)
    task = RecordingSegmentation(data.scenes.train, loss_fn)
    history = fit(model, optimizer, data.loader, data.val, config.epochs, scheduler=scheduler,
                  scheduler_interval=interval, progress=False, log=None, fuse=config.fuse, task=task)

    trained = segment_train.train_mirror(config, data, _initial(config, data), dtype=torch.float64,
                                         log=None)
    mirror = trained["mirror"]
    assert trained["steps"] == len(task.losses) == 2
    np.testing.assert_allclose(trained["losses"], task.losses, rtol=1e-9)
    assert trained["losses"][0] != trained["losses"][-1]  # it trained
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert [g["lr"] for g in mirror.optimizer.param_groups] == pytest.approx(lrs, rel=1e-12)
    assert [g["weight_decay"] for g in mirror.optimizer.param_groups] == [config.weight_decay, 0.0]

    # 1e-9 relative to each tensor's largest value; a running mean to 1e-9 of its layer's
    # spread (sqrt of the running variance: a mean of values that cancel is small, its
    # rounding is not).
    theirs = {k: v.numpy() for k, v in mirror.tv.state_dict().items()}
    start = segment_train.our_initial_model(config, data).state_dict()
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
    assert moved > 0.8 * floats  # it trained: most weights and statistics moved

    assert trained["val_miou"] == pytest.approx(history["val_miou"], abs=1e-9)
    assert trained["best_epoch"] == history["best_epoch"]
    figures = segment_train.score_mirror(trained, data, model.num_classes)
    ours = evaluate_segmenter(model, data.test.images, data.test.masks, loss_fn=loss_fn, fuse=fuse)
    assert figures["test_miou"] == pytest.approx(ours["miou"], abs=1e-9)
    assert figures["test_pixel_accuracy"] == pytest.approx(ours["pixel_accuracy"], abs=1e-9)
    assert 0 < figures["test_miou"] < 1
    model.load_state_dict(history["best_state"])
    best = evaluate_segmenter(model, data.test.images, data.test.masks, loss_fn=loss_fn, fuse=fuse)
    assert figures["best_val_test_miou"] == pytest.approx(best["miou"], abs=1e-9)


@pytest.mark.parametrize("smooth", [1.0, 0.0])
def test_the_torch_dice_is_our_dice_loss_with_its_gradient(smooth):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 4, 5, 6))
    t = rng.integers(0, 3, size=(2, 5, 6))  # class 3 absent
    t[0, 0, :3] = -100                      # some pixels ignored
    up = float(rng.normal())
    ours_z = Tensor(z, requires_grad=True)
    (F.dice_loss(ours_z, t, smooth=smooth) * up).backward()
    theirs_z = torch.tensor(z, requires_grad=True)
    value = segment_train.torch_dice(theirs_z, torch.tensor(t), smooth=smooth)
    (value * up).backward()
    assert value.item() == pytest.approx(float(F.dice_loss(Tensor(z), t, smooth=smooth).item()), rel=1e-12)
    np.testing.assert_allclose(theirs_z.grad.numpy(), ours_z.grad, rtol=1e-9, atol=1e-14)


def test_the_losses_are_build_losss_and_others_are_refused():
    rng = np.random.default_rng(1)
    z, t = rng.normal(size=(2, 3, 4, 4)), rng.integers(0, 3, size=(2, 4, 4))
    for loss in segment_train.LOSSES:
        config = _config("simple", loss)
        ours = float(build_loss(config)(Tensor(z), t).item())
        theirs = float(segment_train.torch_loss(config)(torch.tensor(z), torch.tensor(t)))
        assert theirs == pytest.approx(ours, rel=1e-12), loss
    with pytest.raises(ValueError, match="expected loss in .* got 'focal'"):
        segment_train.torch_loss(_config("simple", "focal"))


def test_a_finished_runs_configuration_is_read_from_its_metrics(scenes, tmp_path):
    config = TrainConfig(task="segment", dataset="mnist-scenes", image_size=SIZE, width=0.35,
                         epochs=7, batch_size=4, lr=0.2, seed=5, head="aspp", out=str(tmp_path))
    saved = saved_config(config.resolved(SIZE, SIZE), scenes, Normalize.from_data(scenes.train.images))
    (tmp_path / "metrics.json").write_text(json.dumps({"config": saved, "test_miou": 0.5}))
    read, metrics = segment_train.read_run(tmp_path)
    assert read == config.resolved(SIZE, SIZE) and metrics["test_miou"] == 0.5
    saved["task"] = "detect"
    (tmp_path / "metrics.json").write_text(json.dumps({"config": saved}))
    with pytest.raises(ValueError, match="is a 'detect' run, not a segmentation run"):
        segment_train.read_run(tmp_path)


def test_the_table_shows_both_and_the_difference():
    ours = {"test_miou": 0.70, "test_pixel_accuracy": 0.95, "test_mean_class_accuracy": 0.8,
            "best_val_test_miou": 0.71, "train_seconds": 100.0, "seconds_per_step": 0.5}
    theirs = {"test_miou": 0.69, "test_pixel_accuracy": 0.96, "test_mean_class_accuracy": 0.8,
              "best_val_test_miou": 0.70, "train_seconds": 50.0, "seconds_per_step": 0.25}
    text = segment_train.table(ours, theirs)
    assert "test mIoU" in text and "0.7000      0.6900        0.0100" in text
    assert "0.9500      0.9600       -0.0100" in text
    assert "-" in segment_train.table(None, theirs).splitlines()[1]


def test_the_twin_keeps_our_dropout_rate(scenes):
    config = _config("aspp", "ce").resolved(SIZE, SIZE)
    data = segment_train.segmentation_data(config, scenes)
    model = segment_train.our_initial_model(config, data)
    rates = [m.p for m in segment_train.torch_twin(model, config).modules()
             if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.5]  # ASPP's projection, as ours
    rates = [m.p for m in segment_train.torch_twin(_dropout_off(model), config).modules()
             if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.0]
