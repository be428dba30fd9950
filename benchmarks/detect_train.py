"""The detection run trained again in PyTorch: the same network, data and recipe; both mAPs.

    python -m benchmarks.detect_train --ours runs/detect          # a finished detection run
    python -m benchmarks.detect_train --run-ours runs/detect [flags of tinymbv2 train]
    python -m benchmarks.detect_train --epochs 1 --width 0.25     # the mirror alone

The mirror takes everything from tinymbv2's own code and the run's configuration, never a
copy of the recipe:

* the network: ``TorchSSDLite`` (``benchmarks/torch_ssdlite.py``, torchvision's parts with
  tinymbv2's state_dict keys) holding the initial weights of
  [build_model][tinymbv2.train.build.build_model] for that configuration (seeded: the very
  init of our run), and the default boxes of
  [default_boxes_for][tinymbv2.detection.default_boxes_for] on our model;
* the data: the scenes and the Normalize that ``run_training`` uses for ``task="detect"``,
  and the batches of *our* DataLoader (same seed, ``set_epoch`` each epoch, as
  [fit][tinymbv2.train.trainer.fit] does), handed to torch as arrays;
* the optimizer: torch's class of the same name as what
  [build_optimizer][tinymbv2.train.build.build_optimizer] builds, over the same two groups as
  [param_groups][tinymbv2.train.build.param_groups] with the same options; the schedule:
  torch's class of the same name as what
  [build_scheduler][tinymbv2.train.build.build_scheduler] builds, with its arguments, stepped
  at the same interval;
* the loss: torchvision's ``SSD.compute_loss`` (box regression + classification) in train
  mode; after each epoch the validation mAP@0.5 (torchvision's ``postprocess_detections``
  with the settings our evaluation uses, then our COCO-style
  [mean_average_precision][tinymbv2.evaluation.detection_metrics.mean_average_precision]),
  keeping the best-val weights as ``fit`` does; at the end the test mAP@0.5 and mAP of the
  final weights and the test mAP@0.5 of the best-val weights, as ``metrics.json`` reports
  them.

The optimizer, schedule, loop, best-val weights, table and command line are
``benchmarks/torch_mirror.py``'s, shared with ``segment_train``. PyTorch runs with its
default number of threads, printed. ``tests/benchmarks/
test_detect_train.py`` checks in float64 that a few steps of the mirror (these functions)
and of our trainer end with the same weights and losses.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for both contestants)
import torch

from benchmarks import torch_mirror
from benchmarks.torch_mirror import (TIMING_ROWS, Mirror, eval_batches, load_twin, mirror_recipe,
                                     optimizer_step, our_timing, step_timing, train_loop,
                                     with_best_state)
from benchmarks.torch_mirror import our_initial_model  # noqa: F401  (the tests build ours with it)
from benchmarks.torch_ssdlite import TorchSSDLite, torchvision_loss, torchvision_postprocess
from tinymbv2 import nn
from tinymbv2.detection import default_boxes_for, postprocess_detections
from tinymbv2.evaluation import mean_average_precision
from tinymbv2.train.run import DetectionData, detection_data
from tinymbv2.train.config import TrainConfig

# what our evaluate_detector passes to postprocess_detections: nothing, so its defaults
POSTPROCESS = {name: p.default for name, p in inspect.signature(postprocess_detections).parameters.items()
               if name in ("score_thresh", "nms_thresh", "topk_candidates", "detections_per_img")}


def torch_twin(model, config: TrainConfig, dtype=torch.float32) -> TorchSSDLite:
    """``TorchSSDLite`` holding ``model``'s weights and buffers, in ``dtype``.

    Args:
        model: Our detector.
        config: Its configuration (the width).
        dtype: torch.float32 (the benchmark) or torch.float64 (the test).

    Returns:
        The torch module, in train mode.
    """
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return load_twin(TorchSSDLite(config.width, model.num_classes, in_channels=stem.in_channels),
                     model, dtype)


def torch_targets(targets, dtype) -> list[dict]:
    """Our targets (numpy boxes and labels) as torchvision's.

    Args:
        targets: Dicts of ``"boxes"`` (M, 4) and ``"labels"`` (M,).
        dtype: The boxes' torch dtype (the model's).

    Returns:
        The same dicts of torch tensors.
    """
    return [{"boxes": torch.tensor(np.asarray(t["boxes"]), dtype=dtype),
             "labels": torch.tensor(np.asarray(t["labels"]), dtype=torch.int64)} for t in targets]


@dataclass
class DetectionMirror(Mirror):
    """The torch side of a detection run: a [Mirror][benchmarks.torch_mirror.Mirror] and the
    default boxes.

    Args:
        tv: The [torch_twin][benchmarks.detect_train.torch_twin].
        optimizer: Its optimizer.
        scheduler: Its schedule, or None.
        interval: ``"batch"`` or ``"epoch"``: when the schedule steps (ours').
        dtype: The torch dtype.
        anchors: (A, 4) torch default boxes.
    """

    anchors: torch.Tensor = None


def build_mirror(config: TrainConfig, model, steps_per_epoch: int, size: int,
                 dtype=torch.float32) -> DetectionMirror:
    """The mirror of our run's parts, built from ``config`` by our own builders
    ([mirror_recipe][benchmarks.torch_mirror.mirror_recipe]).

    Args:
        config: The run's configuration.
        model: Our initial model (its weights and default boxes are copied).
        steps_per_epoch: The batches per epoch (the schedule spans them all).
        size: The scenes' side (the default boxes are laid out for it, as our task lays them).
        dtype: torch.float32 (the benchmark) or torch.float64 (the test).

    Returns:
        The [DetectionMirror][benchmarks.detect_train.DetectionMirror].
    """
    tv = torch_twin(model, config, dtype)
    optimizer, scheduler, interval = mirror_recipe(config, model, tv, steps_per_epoch)
    anchors = torch.as_tensor(default_boxes_for(model, (size, size)), dtype=dtype)
    return DetectionMirror(tv, optimizer, scheduler, interval, dtype, anchors)


def mirror_step(mirror: DetectionMirror, images, targets) -> float:
    """One training step in torch: forward, SSD's loss, backward, step (and a per-batch schedule).

    Args:
        mirror: The [DetectionMirror][benchmarks.detect_train.DetectionMirror].
        images: (N, C, S, S) normalised images (numpy).
        targets: N dicts of numpy ``"boxes"`` and ``"labels"``.

    Returns:
        The batch's loss, box regression + classification.
    """
    cls, box = mirror.tv(torch.as_tensor(np.asarray(images), dtype=mirror.dtype))
    parts = torchvision_loss(cls, box, mirror.anchors, torch_targets(targets, mirror.dtype))
    return optimizer_step(mirror, parts["bbox_regression"] + parts["classification"])


def mirror_detect(mirror: DetectionMirror, images, size: int) -> list[dict]:
    """Eval-mode detections of the torch twin, post-processed as our evaluation does.

    Args:
        mirror: The [DetectionMirror][benchmarks.detect_train.DetectionMirror].
        images: (N, C, S, S) normalised images.
        size: The side S.

    Returns:
        One numpy ``{"boxes", "scores", "labels"}`` dict per image.
    """
    def read(outputs):
        return [{k: v.numpy() for k, v in d.items()}
                for d in torchvision_postprocess(*outputs, mirror.anchors, (size, size), **POSTPROCESS)]

    return eval_batches(mirror, images, read)


def mirror_map(mirror: DetectionMirror, split, size: int, num_classes: int) -> dict:
    """COCO's mAP and mAP@0.5 of the torch twin on a split of scenes.

    Args:
        mirror: The [DetectionMirror][benchmarks.detect_train.DetectionMirror].
        split: A SceneSplit with normalised images.
        size: The scenes' side.
        num_classes: The classes, background included.

    Returns:
        [mean_average_precision][tinymbv2.evaluation.detection_metrics.mean_average_precision]'s dict.
    """
    targets = split.targets(np.arange(len(split)))
    return mean_average_precision(mirror_detect(mirror, split.images, size), targets, num_classes)


def train_mirror(config: TrainConfig, data: DetectionData, model, dtype=torch.float32,
                 validate: bool = True, log=print) -> dict:
    """Train the mirror of our run: ``config.epochs`` epochs over our loader's batches.

    Args:
        config: The run's configuration.
        data: Its [DetectionData][tinymbv2.train.run.SceneData].
        model: Our initial model (weights and default boxes; not trained here).
        dtype: torch.float32 (the benchmark) or torch.float64 (the test).
        validate: Score the validation split after each epoch and keep the best weights.
        log: Where the per-epoch lines go (None: nowhere).

    Returns:
        ``{"mirror", "losses" (every step's), "train_loss" (per epoch), "val_map50",
        "best_epoch", "best_state", "train_seconds" (the whole loop, validation included, as
        our run's), "step_seconds" (the training passes only), "steps"}``.
    """
    torch.manual_seed(config.seed)  # nothing in the twin draws, but its init did
    loader, train = data.loader, data.scenes.train
    mirror = build_mirror(config, model, len(loader), data.size, dtype)

    def step(images, indices):
        return mirror_step(mirror, images, train.targets(indices))

    def score():
        return mirror_map(mirror, data.val, data.size, model.num_classes)["map_50"]

    return train_loop(config, loader, mirror, step, score if validate else None, "val_map50",
                      "mAP@0.5", log)


def score_mirror(trained: dict, data: DetectionData, num_classes: int) -> dict:
    """The test figures ``metrics.json`` reports, for the mirror.

    Args:
        trained: What [train_mirror][benchmarks.detect_train.train_mirror] returned.
        data: The run's data.
        num_classes: The classes, background included.

    Returns:
        ``{"test_map_50", "test_map", "best_val_test_map_50", "train_seconds",
        "seconds_per_step"}`` (the best-val figure is the final one when nothing was validated).
    """
    mirror = trained["mirror"]
    final = mirror_map(mirror, data.test, data.size, num_classes)
    best = with_best_state(trained, lambda: mirror_map(mirror, data.test, data.size, num_classes)["map_50"],
                           final["map_50"])
    return {"test_map_50": final["map_50"], "test_map": final["map"], "best_val_test_map_50": best,
            **step_timing(trained)}


def our_figures(metrics: dict, steps_per_epoch: int) -> dict:
    """The same figures from our run's ``metrics.json``.

    Args:
        metrics: The metrics of a finished detection run.
        steps_per_epoch: Its batches per epoch.

    Returns:
        ``{"test_map_50", "test_map", "best_val_test_map_50", "train_seconds",
        "seconds_per_step"}``; seconds per step from the epochs' training passes.
    """
    return {"test_map_50": metrics["test_map_50"], "test_map": metrics["test_map"],
            "best_val_test_map_50": metrics["best_val_test_map_50"],
            **our_timing(metrics, steps_per_epoch)}


ROWS = (("test mAP@0.5", "test_map_50", "{:.4f}"), ("test mAP@[.5:.95]", "test_map", "{:.4f}"),
        ("best-val test mAP@0.5", "best_val_test_map_50", "{:.4f}"), *TIMING_ROWS)


def table(ours: dict | None, theirs: dict) -> str:
    """Ours against PyTorch, one figure a row, and the difference (ours - PyTorch).

    Args:
        ours: Our figures (None: not run).
        theirs: The mirror's.

    Returns:
        The table's text ([table][benchmarks.torch_mirror.table] of ``ROWS``).
    """
    return torch_mirror.table(ours, theirs, ROWS)


def read_run(run_dir) -> tuple[TrainConfig, dict]:
    """The configuration and metrics of a finished detection run.

    Args:
        run_dir: The run's folder (``tinymbv2 train --task detect --out RUN_DIR``).

    Returns:
        ``(config, metrics)`` ([read_run][benchmarks.torch_mirror.read_run]).

    Raises:
        ValueError: The run is not a detection run, or it diverged (no test figures).
    """
    return torch_mirror.read_run(run_dir, "detect", "detection", "detect_train")


TASK = torch_mirror.MirrorTask(
    task="detect", what="detection", prog="detect_train", data=detection_data, train=train_mirror,
    score=score_mirror, ours=our_figures, rows=ROWS, target=("test mAP@0.5", "test_map_50"),
    history=("val_map50", "train_loss"))


def main(argv=None) -> dict:
    """Parse the arguments, train the mirror (and ours with ``--run-ours``), print the table.

    Args:
        argv: The arguments (None: the command line's).

    Returns:
        ``{"config", "torch", "ours" (None without a run of ours), "torch_threads",
        "torch_val_map50", "torch_train_loss"}``.
    """
    return torch_mirror.main(TASK, __doc__, argv)


if __name__ == "__main__":
    main()
