"""The segmentation run trained again in PyTorch: the same network, data and recipe; both mIoUs.

    python -m benchmarks.segment_train --ours runs/segment         # a finished segmentation run
    python -m benchmarks.segment_train --run-ours runs/segment [flags of tinymbv2 train]
    python -m benchmarks.segment_train --epochs 1 --width 0.25    # the mirror alone

The mirror takes everything from tinymbv2's own code and the run's configuration, never a
copy of the recipe (the shared parts are ``benchmarks/torch_mirror.py``'s, as for
``detect_train``):

* the network: ``torch_deeplabv3`` (``benchmarks/torch_deeplab.py``: torchvision's
  ``DeepLabV3``/``LRASPP`` on a dilated ``mobilenet_v2``, with tinymbv2's state_dict keys)
  of the run's head, output stride and width, holding the initial weights of
  [build_model][tinymbv2.train.build.build_model] for that configuration (seeded: the very
  init of our run);
* the data: [segmentation_data][tinymbv2.train.run.segmentation_data] (the scenes of
  [task_scenes][tinymbv2.train.run.task_scenes], whose digits grow with the canvas, their
  Normalize, and the batches of *our* DataLoader in their order);
* the optimizer and schedule: torch's classes of the names and arguments our builders give
  ([mirror_recipe][benchmarks.torch_mirror.mirror_recipe]);
* the loss, per ``config.loss``: ``"ce"`` torch's per-pixel ``cross_entropy`` (with the
  run's label smoothing), ``"dice"`` the soft Dice of
  [dice_loss][tinymbv2.functional.losses.dice_loss] written in torch
  ([torch_dice][benchmarks.segment_train.torch_dice]), ``"ce+dice"`` their sum, as
  [ce_dice_loss][tinymbv2.functional.losses.ce_dice_loss];
* the scores: after each epoch the validation mIoU of the eval-mode argmax masks, keeping
  the best-val weights as ``fit`` does; at the end the test mIoU, pixel accuracy and mean
  class accuracy of the final weights and the test mIoU of the best-val weights, as
  ``metrics.json`` reports them. The metric is ours on both sides, on purpose:
  [segmentation_scores][tinymbv2.evaluation.segmentation_metrics.segmentation_scores] of
  the (N, H, W) predictions.

ASPP's dropout draws its own masks on each side (they cannot be matched across libraries).
PyTorch runs with its default number of threads, printed. ``tests/benchmarks/
test_segment_train.py`` checks in float64 (dropout off) that a few steps of the mirror (these
functions) and of our trainer end with the same weights and losses.
"""
from __future__ import annotations

import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for both contestants)
import torch

from benchmarks import torch_mirror
from benchmarks.torch_deeplab import torch_deeplabv3
from benchmarks.torch_mirror import (TIMING_ROWS, Mirror, eval_batches, load_twin, mirror_recipe,
                                     optimizer_step, our_timing, step_timing, train_loop,
                                     with_best_state)
from benchmarks.torch_mirror import our_initial_model  # noqa: F401  (the tests build ours with it)
from tinymbv2 import nn
from tinymbv2.evaluation import segmentation_confusion, segmentation_scores
from tinymbv2.train.config import TrainConfig
from tinymbv2.train.run import SegmentationData, segmentation_data

DICE_SMOOTH, IGNORE_INDEX = 1.0, -100  # dice_loss's defaults, which build_loss keeps
LOSSES = ("ce", "dice", "ce+dice")

def torch_twin(model, config: TrainConfig, dtype=torch.float32) -> torch.nn.Module:
    """``torch_deeplabv3`` of the run's head, output stride and width, holding ``model``'s
    weights and buffers (and dropout rates), in ``dtype``.

    Args:
        model: Our segmenter, from ``build_model`` for ``config``.
        config: Its configuration (head, output_stride, width).
        dtype: torch.float32 (the benchmark) or torch.float64 (the test).

    Returns:
        The torch module, in train mode: (N, C, H, W) -> ``{"out": (N, K, H, W)}``.
    """
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    tv = torch_deeplabv3(config.head, model.num_classes, config.output_stride, config.width,
                         in_channels=stem.in_channels)
    return load_twin(tv, model, dtype)


def torch_dice(logits: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH,
               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    r"""[dice_loss][tinymbv2.functional.losses.dice_loss]'s soft Dice, in torch (autograd).

    Over all the pixels $i$ of the batch, with $p = \text{softmax}(z)$ over the classes,
    $g = \text{onehot}(t)$ and $m_i = 0$ where $t_i$ is ``ignore_index``:
    $I_k = \sum_i m_i p_{ik} g_{ik}$, $D_k = \sum_i m_i p_{ik} + \sum_i m_i g_{ik} + s$,
    loss $= 1 - \text{mean}_k (2 I_k + s) / D_k$ (every class $k$, present or not; a class
    with $D_k = 0$, possible only when $s = 0$, counts as dice 1).

    Args:
        logits: $z$, (N, K, H, W).
        target: $t$, (N, H, W) int64 class indices (or ``ignore_index``).
        smooth: $s$.
        ignore_index: The target value that counts nowhere.

    Returns:
        The scalar loss.
    """
    k = logits.shape[1]
    keep = (target != ignore_index).unsqueeze(1).to(logits.dtype)                 # (N, 1, H, W)
    p = torch.softmax(logits, dim=1) * keep
    g = torch.nn.functional.one_hot(torch.where(target != ignore_index, target, 0), k)
    g = g.permute(0, 3, 1, 2).to(logits.dtype) * keep                             # (N, K, H, W)
    axes = (0, 2, 3)
    inter, denom = (p * g).sum(axes), p.sum(axes) + g.sum(axes) + smooth
    empty = denom == 0
    dice = torch.where(empty, torch.ones_like(denom),
                       (2 * inter + smooth) / torch.where(empty, torch.ones_like(denom), denom))
    return 1 - dice.mean()


def torch_loss(config: TrainConfig):
    r"""``loss(logits, target)`` in torch for ``config.loss``, as
    [build_loss][tinymbv2.train.build.build_loss] builds ours.

    Args:
        config: The run's configuration (loss, label_smoothing).

    Returns:
        ``"ce"``: the per-pixel cross-entropy's mean (label smoothing $\epsilon$ as ours);
        ``"dice"``: [torch_dice][benchmarks.segment_train.torch_dice]; ``"ce+dice"``: their sum.

    Raises:
        ValueError: A loss with no segmentation mirror here.
    """
    if config.loss not in LOSSES:
        raise ValueError(f"segment_train: expected loss in {LOSSES}, got {config.loss!r}")
    smoothing = config.label_smoothing

    def loss(logits, target):
        value = 0
        if config.loss in ("ce", "ce+dice"):
            value = torch.nn.functional.cross_entropy(logits, target, label_smoothing=smoothing,
                                                      ignore_index=IGNORE_INDEX)
        if config.loss in ("dice", "ce+dice"):
            value = value + torch_dice(logits, target)
        return value

    return loss


def build_mirror(config: TrainConfig, model, steps_per_epoch: int, dtype=torch.float32) -> Mirror:
    """The mirror of our run's parts, built from ``config`` by our own builders.

    Args:
        config: The run's configuration.
        model: Our initial model (its weights are copied).
        steps_per_epoch: The batches per epoch (the schedule spans them all).
        dtype: torch.float32 (the benchmark) or torch.float64 (the test).

    Returns:
        The [Mirror][benchmarks.torch_mirror.Mirror].
    """
    tv = torch_twin(model, config, dtype)
    optimizer, scheduler, interval = mirror_recipe(config, model, tv, steps_per_epoch)
    return Mirror(tv, optimizer, scheduler, interval, dtype)


def mirror_step(mirror: Mirror, loss, images, masks) -> float:
    """One training step in torch: forward, the loss, backward, step (and a per-batch schedule).

    Args:
        mirror: The [Mirror][benchmarks.torch_mirror.Mirror].
        loss: [torch_loss][benchmarks.segment_train.torch_loss]'s function.
        images: (N, C, H, W) normalised images (numpy).
        masks: (N, H, W) integer masks (numpy).

    Returns:
        The batch's loss.
    """
    logits = mirror.tv(torch.as_tensor(np.asarray(images), dtype=mirror.dtype))["out"]
    return optimizer_step(mirror, loss(logits, torch.as_tensor(np.asarray(masks), dtype=torch.int64)))


def mirror_predict(mirror: Mirror, images) -> np.ndarray:
    """Eval-mode masks of the torch twin: each pixel's argmax over the classes.

    Args:
        mirror: The [Mirror][benchmarks.torch_mirror.Mirror].
        images: (N, C, H, W) normalised images.

    Returns:
        (N, H, W) int64 predicted classes.
    """
    found = eval_batches(mirror, images, lambda outputs: list(outputs["out"].argmax(dim=1).numpy()))
    return np.stack(found) if found else np.zeros((0, *np.shape(images)[-2:]), np.int64)


def mirror_scores(mirror: Mirror, split, num_classes: int) -> dict:
    """Our segmentation scores of the torch twin's masks on a split of scenes.

    Args:
        mirror: The [Mirror][benchmarks.torch_mirror.Mirror].
        split: A SceneSplit with normalised images and its masks.
        num_classes: K, background included.

    Returns:
        [segmentation_scores][tinymbv2.evaluation.segmentation_metrics.segmentation_scores]'s
        dict (``"miou"``, ``"pixel_accuracy"``, ...) of the (N, H, W) predictions.
    """
    predictions = mirror_predict(mirror, split.images)
    return segmentation_scores(segmentation_confusion(predictions, np.asarray(split.masks), num_classes))


def train_mirror(config: TrainConfig, data: SegmentationData, model, dtype=torch.float32,
                 validate: bool = True, log=print) -> dict:
    """Train the mirror of our run: ``config.epochs`` epochs over our loader's batches.

    Args:
        config: The run's configuration.
        data: Its [SegmentationData][tinymbv2.train.run.SceneData].
        model: Our initial model (not trained here).
        dtype: torch.float32 (the benchmark) or torch.float64 (the test).
        validate: Score the validation split after each epoch and keep the best weights.
        log: Where the per-epoch lines go (None: nowhere).

    Returns:
        [train_loop][benchmarks.torch_mirror.train_loop]'s dict, the validation mIoU under
        ``"val_miou"``.
    """
    torch.manual_seed(config.seed)  # the twin's dropout draws from torch's generator
    loader, masks, loss = data.loader, data.scenes.train.masks, torch_loss(config)
    mirror = build_mirror(config, model, len(loader), dtype)

    def step(images, indices):
        return mirror_step(mirror, loss, images, masks[np.asarray(indices)])

    def score():
        return mirror_scores(mirror, data.val, model.num_classes)["miou"]

    return train_loop(config, loader, mirror, step, score if validate else None, "val_miou",
                      "mIoU", log)


def score_mirror(trained: dict, data: SegmentationData, num_classes: int) -> dict:
    """The test figures ``metrics.json`` reports, for the mirror.

    Args:
        trained: What [train_mirror][benchmarks.segment_train.train_mirror] returned.
        data: The run's data.
        num_classes: K, background included.

    Returns:
        ``{"test_miou", "test_pixel_accuracy", "test_mean_class_accuracy",
        "best_val_test_miou", "train_seconds", "seconds_per_step"}`` (the best-val figure is
        the final one when nothing was validated).
    """
    mirror = trained["mirror"]
    final = mirror_scores(mirror, data.test, num_classes)
    best = with_best_state(trained, lambda: mirror_scores(mirror, data.test, num_classes)["miou"],
                           final["miou"])
    return {"test_miou": final["miou"], "test_pixel_accuracy": final["pixel_accuracy"],
            "test_mean_class_accuracy": final["mean_class_accuracy"], "best_val_test_miou": best,
            **step_timing(trained)}


def our_figures(metrics: dict, steps_per_epoch: int) -> dict:
    """The same figures from our run's ``metrics.json``.

    Args:
        metrics: The metrics of a finished segmentation run.
        steps_per_epoch: Its batches per epoch.

    Returns:
        [score_mirror][benchmarks.segment_train.score_mirror]'s keys.
    """
    return {key: metrics[key] for key in ("test_miou", "test_pixel_accuracy",
                                           "test_mean_class_accuracy", "best_val_test_miou")} | \
        our_timing(metrics, steps_per_epoch)


ROWS = (("test mIoU", "test_miou", "{:.4f}"), ("test pixel accuracy", "test_pixel_accuracy", "{:.4f}"),
        ("test mean class acc.", "test_mean_class_accuracy", "{:.4f}"),
        ("best-val test mIoU", "best_val_test_miou", "{:.4f}"), *TIMING_ROWS)


def table(ours: dict | None, theirs: dict) -> str:
    """Ours against PyTorch, one figure a row, and the difference (ours - PyTorch).

    Args:
        ours: Our figures (None: not run).
        theirs: The mirror's.

    Returns:
        The table's text ([table][benchmarks.torch_mirror.table] of ``ROWS``).
    """
    return torch_mirror.table(ours, theirs, ROWS)


def read_run(run_dir):
    """The configuration and metrics of a finished segmentation run.

    Args:
        run_dir: The run's folder (``tinymbv2 train --task segment --out RUN_DIR``).

    Returns:
        ``(config, metrics)`` ([read_run][benchmarks.torch_mirror.read_run]).

    Raises:
        ValueError: The run is not a segmentation run, or it diverged (no test figures).
    """
    return torch_mirror.read_run(run_dir, "segment", "segmentation", "segment_train")


TASK = torch_mirror.MirrorTask(
    task="segment", what="segmentation", prog="segment_train", data=segmentation_data,
    train=train_mirror, score=score_mirror, ours=our_figures, rows=ROWS,
    target=("test mIoU", "test_miou"), history=("val_miou", "train_loss"))


def main(argv=None) -> dict:
    """Parse the arguments, train the mirror (and ours with ``--run-ours``), print the table.

    Args:
        argv: The arguments (None: the command line's).

    Returns:
        ``{"config", "torch", "ours" (None without a run of ours), "torch_threads",
        "torch_val_miou", "torch_train_loss"}``.
    """
    return torch_mirror.main(TASK, __doc__, argv)


if __name__ == "__main__":
    main()
