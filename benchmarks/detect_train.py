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

PyTorch runs with its default number of threads, printed. ``tests/benchmarks/
test_detect_train.py`` checks in float64 that a few steps of the mirror (these functions)
and of our trainer end with the same weights and losses.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for both contestants)
import torch

from benchmarks.torch_ssdlite import TorchSSDLite, torchvision_loss, torchvision_postprocess
from tinymbv2 import nn, optim
from tinymbv2.cli.args import add_data_args, add_fuse_arg, add_recipe_args, train_config
from tinymbv2.detection import default_boxes_for, postprocess_detections
from tinymbv2.evaluation import mean_average_precision
from tinymbv2.random import manual_seed
from tinymbv2.train import run_training
from tinymbv2.train.run import DetectionData, detection_data
from tinymbv2.train.build import build_model, build_optimizer, build_scheduler, param_groups
from tinymbv2.train.config import TrainConfig

# what our evaluate_detector passes to postprocess_detections: nothing, so its defaults
POSTPROCESS = {name: p.default for name, p in inspect.signature(postprocess_detections).parameters.items()
               if name in ("score_thresh", "nms_thresh", "topk_candidates", "detections_per_img")}
EVAL_BATCH = 32  # evaluate_detector's batch (eval mode: the batch does not change the outputs)


def our_initial_model(config: TrainConfig, data: DetectionData):
    """Our detector as ``run_training`` builds it before step one (the seed set first).

    Args:
        config: The run's configuration.
        data: Its data (the channels and classes).

    Returns:
        The plain tinymbv2 model, float32.
    """
    manual_seed(config.seed)
    return build_model(config, data.scenes.image_shape[0], data.scenes.num_classes)


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
    tv = TorchSSDLite(config.width, model.num_classes, in_channels=stem.in_channels)
    tv.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    return tv.to(dtype).train()


def torch_optimizer(ours, model, tv):
    """torch's optimizer of the same class as ``ours``, over the same groups and options.

    Args:
        ours: Our optimizer, from ``build_optimizer(config, param_groups(model, ...))``, not
            yet stepped or scheduled.
        model: Our model, whose parameters ``ours`` holds (their names pick torch's).
        tv: The torch twin.

    Returns:
        The torch optimizer.

    Raises:
        ValueError: An optimizer with no torch class of the same meaning.
    """
    classes = {optim.SGD: torch.optim.SGD, optim.Adam: torch.optim.Adam, optim.AdamW: torch.optim.AdamW}
    cls = classes.get(type(ours))
    if cls is None:
        raise ValueError(f"detect_train: no torch mirror for {type(ours).__name__} (SGD, Adam, AdamW)")
    names = {id(p): name for name, p in model.named_parameters()}
    theirs = dict(tv.named_parameters())
    options = set(inspect.signature(cls).parameters) - {"params"}
    groups = [{"params": [theirs[names[id(p)]] for p in group["params"]],
               **{k: v for k, v in group.items() if k in options}} for group in ours.param_groups]
    return cls(groups)


def torch_scheduler(ours, optimizer):
    """torch's scheduler of the same class as ``ours``, with its arguments.

    Args:
        ours: Our scheduler, from ``build_scheduler`` (None: none).
        optimizer: The torch optimizer it drives.

    Returns:
        The torch scheduler, or None.

    Raises:
        ValueError: A schedule with no mirror here.
    """
    if ours is None:
        return None
    sched = torch.optim.lr_scheduler
    groups = ours.optimizer.param_groups
    if isinstance(ours, optim.lr_scheduler.OneCycleLR):
        def per_group(key):
            return [g[key] for g in groups]

        return sched.OneCycleLR(
            optimizer, max_lr=per_group("max_lr"), total_steps=ours.total_steps,
            pct_start=ours.pct_start, anneal_strategy=ours.anneal_strategy,
            cycle_momentum=ours.cycle_momentum,
            base_momentum=per_group("base_momentum") if ours.cycle_momentum else 0.85,
            max_momentum=per_group("max_momentum") if ours.cycle_momentum else 0.95,
            div_factor=groups[0]["max_lr"] / groups[0]["initial_lr"],
            final_div_factor=groups[0]["initial_lr"] / groups[0]["min_lr"])
    if isinstance(ours, optim.lr_scheduler.CosineAnnealingLR):
        return sched.CosineAnnealingLR(optimizer, T_max=ours.T_max, eta_min=ours.eta_min)
    if isinstance(ours, optim.lr_scheduler.ExponentialLR):
        return sched.ExponentialLR(optimizer, gamma=ours.gamma)
    raise ValueError(f"detect_train: no torch mirror for {type(ours).__name__}")


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
class Mirror:
    """The torch side of a run: the twin, its optimizer, schedule and default boxes.

    Args:
        tv: The [torch_twin][benchmarks.detect_train.torch_twin].
        optimizer: Its optimizer ([torch_optimizer][benchmarks.detect_train.torch_optimizer]).
        scheduler: Its schedule, or None.
        interval: ``"batch"`` or ``"epoch"``: when the schedule steps (ours').
        anchors: (A, 4) torch default boxes.
        dtype: The torch dtype.
    """

    tv: TorchSSDLite
    optimizer: object
    scheduler: object
    interval: str
    anchors: torch.Tensor
    dtype: torch.dtype


def build_mirror(config: TrainConfig, model, steps_per_epoch: int, size: int,
                 dtype=torch.float32) -> Mirror:
    """The mirror of our run's parts, built from ``config`` by our own builders.

    Our optimizer and schedule are built (on ``model``, which nothing else then steps) only
    to be read: torch's get their classes, groups and arguments.

    Args:
        config: The run's configuration.
        model: Our initial model (its weights and default boxes are copied).
        steps_per_epoch: The batches per epoch (the schedule spans them all).
        size: The scenes' side (the default boxes are laid out for it, as our task lays them).
        dtype: torch.float32 (the benchmark) or torch.float64 (the test).

    Returns:
        The [Mirror][benchmarks.detect_train.Mirror].
    """
    tv = torch_twin(model, config, dtype)
    ours = build_optimizer(config, param_groups(model, config.weight_decay))
    optimizer = torch_optimizer(ours, model, tv)
    scheduler, interval = build_scheduler(config, ours, steps_per_epoch)
    anchors = torch.as_tensor(default_boxes_for(model, (size, size)), dtype=dtype)
    return Mirror(tv, optimizer, torch_scheduler(scheduler, optimizer), interval, anchors, dtype)


def mirror_step(mirror: Mirror, images, targets) -> float:
    """One training step in torch: forward, SSD's loss, backward, step (and a per-batch schedule).

    Args:
        mirror: The [Mirror][benchmarks.detect_train.Mirror].
        images: (N, C, S, S) normalised images (numpy).
        targets: N dicts of numpy ``"boxes"`` and ``"labels"``.

    Returns:
        The batch's loss, box regression + classification.
    """
    cls, box = mirror.tv(torch.as_tensor(np.asarray(images), dtype=mirror.dtype))
    parts = torchvision_loss(cls, box, mirror.anchors, torch_targets(targets, mirror.dtype))
    loss = parts["bbox_regression"] + parts["classification"]
    mirror.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    mirror.optimizer.step()
    if mirror.scheduler is not None and mirror.interval == "batch":
        mirror.scheduler.step()
    return float(loss.item())


def mirror_detect(mirror: Mirror, images, size: int) -> list[dict]:
    """Eval-mode detections of the torch twin, post-processed as our evaluation does.

    Args:
        mirror: The [Mirror][benchmarks.detect_train.Mirror].
        images: (N, C, S, S) normalised images.
        size: The side S.

    Returns:
        One numpy ``{"boxes", "scores", "labels"}`` dict per image.
    """
    mirror.tv.eval()
    found = []
    with torch.no_grad():
        for start in range(0, len(images), EVAL_BATCH):
            x = torch.as_tensor(np.asarray(images[start:start + EVAL_BATCH]), dtype=mirror.dtype)
            cls, box = mirror.tv(x)
            found += [{k: v.numpy() for k, v in d.items()}
                      for d in torchvision_postprocess(cls, box, mirror.anchors, (size, size), **POSTPROCESS)]
    mirror.tv.train()
    return found


def mirror_map(mirror: Mirror, split, size: int, num_classes: int) -> dict:
    """COCO's mAP and mAP@0.5 of the torch twin on a split of scenes.

    Args:
        mirror: The [Mirror][benchmarks.detect_train.Mirror].
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
    out = {"mirror": mirror, "losses": [], "train_loss": [], "val_map50": [], "best_epoch": None,
           "best_state": None, "step_seconds": 0.0, "steps": 0}
    best = None
    start = time.perf_counter()
    for epoch in range(config.epochs):
        loader.set_epoch(epoch)
        mirror.tv.train()
        total, seen, tick = 0.0, 0, time.perf_counter()
        for images, indices in loader:
            value = mirror_step(mirror, images, train.targets(indices))
            out["losses"].append(value)
            total, seen = total + value * len(indices), seen + len(indices)
        if mirror.scheduler is not None and mirror.interval == "epoch":
            mirror.scheduler.step()
        out["step_seconds"] += time.perf_counter() - tick
        out["steps"] += len(loader)
        out["train_loss"].append(total / max(seen, 1))
        line = f"torch epoch {epoch + 1:>3}/{config.epochs}  train loss {out['train_loss'][-1]:.4f}"
        if validate:
            score = mirror_map(mirror, data.val, data.size, model.num_classes)["map_50"]
            out["val_map50"].append(score)
            if best is None or score > best:
                best, out["best_epoch"] = score, epoch + 1
                out["best_state"] = copy.deepcopy(mirror.tv.state_dict())
            line += f"  val mAP@0.5 {score:.4f}"
        if log:
            log(f"{line}  {time.perf_counter() - tick:.1f}s")
    out["train_seconds"] = time.perf_counter() - start
    return out


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
    best = final["map_50"]
    if trained["best_state"] is not None:
        current = copy.deepcopy(mirror.tv.state_dict())
        mirror.tv.load_state_dict(trained["best_state"])
        best = mirror_map(mirror, data.test, data.size, num_classes)["map_50"]
        mirror.tv.load_state_dict(current)
    return {"test_map_50": final["map_50"], "test_map": final["map"], "best_val_test_map_50": best,
            "train_seconds": trained["train_seconds"],
            "seconds_per_step": trained["step_seconds"] / max(trained["steps"], 1)}


def our_figures(metrics: dict, steps_per_epoch: int) -> dict:
    """The same figures from our run's ``metrics.json``.

    Args:
        metrics: The metrics of a finished detection run.
        steps_per_epoch: Its batches per epoch.

    Returns:
        ``{"test_map_50", "test_map", "best_val_test_map_50", "train_seconds",
        "seconds_per_step"}``; seconds per step from the epochs' training passes.
    """
    seconds = metrics["history"]["seconds"]
    return {"test_map_50": metrics["test_map_50"], "test_map": metrics["test_map"],
            "best_val_test_map_50": metrics["best_val_test_map_50"],
            "train_seconds": metrics["train_seconds"],
            "seconds_per_step": sum(seconds) / max(1, len(seconds) * steps_per_epoch)}


ROWS = (("test mAP@0.5", "test_map_50", "{:.4f}"), ("test mAP@[.5:.95]", "test_map", "{:.4f}"),
        ("best-val test mAP@0.5", "best_val_test_map_50", "{:.4f}"),
        ("train seconds", "train_seconds", "{:.1f}"), ("seconds per step", "seconds_per_step", "{:.3f}"))


def table(ours: dict | None, theirs: dict) -> str:
    """Ours against PyTorch, one figure a row, and the difference (ours - PyTorch).

    Args:
        ours: Our figures (None: not run).
        theirs: The mirror's.

    Returns:
        The table's text.
    """
    lines = [f"{'':<24}{'tinymbv2':>12}{'PyTorch':>12}{'ours - torch':>14}"]
    for label, key, fmt in ROWS:
        mine = fmt.format(ours[key]) if ours else "-"
        diff = fmt.format(ours[key] - theirs[key]) if ours else "-"
        lines.append(f"{label:<24}{mine:>12}{fmt.format(theirs[key]):>12}{diff:>14}")
    return "\n".join(lines)


def read_run(run_dir) -> tuple[TrainConfig, dict]:
    """The configuration and metrics of a finished detection run.

    Args:
        run_dir: The run's folder (``tinymbv2 train --task detect --out RUN_DIR``).

    Returns:
        ``(config, metrics)``: the [TrainConfig][tinymbv2.train.config.TrainConfig] saved in
        its ``metrics.json`` (under ``"config"``), and the whole of that file.

    Raises:
        ValueError: The run is not a detection run, or it diverged (no test figures).
    """
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    config = TrainConfig.from_saved(metrics["config"])
    if config.task != "detect":
        raise ValueError(f"detect_train: {run_dir} is a {config.task!r} run, not a detection run")
    config.validate()
    if metrics.get("diverged"):
        raise ValueError(f"detect_train: {run_dir} diverged ({metrics['diverged']}): no test figures")
    return config, metrics


def main(argv=None) -> dict:
    """Parse the arguments, train the mirror (and ours with ``--run-ours``), print the table.

    Args:
        argv: The arguments (None: the command line's).

    Returns:
        ``{"config", "torch", "ours" (None without a run of ours), "torch_threads"}``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, default_dataset="mnist-scenes")
    add_recipe_args(parser)
    add_fuse_arg(parser)
    parser.set_defaults(task="detect")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--ours", metavar="RUN_DIR", help="a finished `tinymbv2 train --task detect` run")
    which.add_argument("--run-ours", metavar="OUT", help="run ours first (run_training) into OUT")
    parser.add_argument("--json", metavar="PATH", help="write the figures here too")
    args = parser.parse_args(argv)

    metrics = None
    if args.ours:
        config, metrics = read_run(args.ours)
    else:
        config = train_config(args, args.run_ours or "runs/detect_train_unused")
        if config.task != "detect":
            parser.error("detect_train mirrors a detection run (--task detect)")
        if args.run_ours:
            metrics = run_training(config, progress=args.progress)
    data = detection_data(config)
    config = config.resolved(data.size, data.size)
    model = our_initial_model(config, data)
    threads = torch.get_num_threads()
    print(f"{data.scenes!r}; width {config.width}, {config.optimizer} lr {config.lr} "
          f"wd {config.weight_decay}, {config.schedule}, {config.epochs} epochs of "
          f"{len(data.loader)} batches of {config.batch_size}; torch {torch.__version__}, "
          f"its default {threads} threads")
    trained = train_mirror(config, data, model)
    theirs = score_mirror(trained, data, model.num_classes)
    ours = our_figures(metrics, len(data.loader)) if metrics else None
    print(table(ours, theirs))
    if ours:
        gap = ours["test_map_50"] - theirs["test_map_50"]
        print(f"test mAP@0.5: ours {'within' if abs(gap) <= 0.02 else 'NOT within'} 0.02 of "
              f"PyTorch's ({gap:+.4f})")
    result = {"config": config.__dict__, "torch": theirs, "ours": ours, "torch_threads": threads,
              "torch_val_map50": trained["val_map50"], "torch_train_loss": trained["train_loss"]}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
