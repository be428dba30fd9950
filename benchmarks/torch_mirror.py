"""What the PyTorch mirrors of our scene runs share (``detect_train``, ``segment_train``).

A mirror trains a finished run's network, data and recipe a second time in PyTorch, taking
everything from tinymbv2's own code and the run's configuration:

* the initial weights of [build_model][tinymbv2.train.build.build_model] (seeded: the very
  init of our run), copied into a torch twin with the same ``state_dict`` keys;
* the optimizer: torch's class of the same name as what
  [build_optimizer][tinymbv2.train.build.build_optimizer] builds, over the same two groups
  as [param_groups][tinymbv2.train.build.param_groups] with the same options; the schedule:
  torch's class of the same name as what
  [build_scheduler][tinymbv2.train.build.build_scheduler] builds, with its arguments,
  stepped at the same interval;
* the batches of *our* DataLoader (same seed, ``set_epoch`` each epoch, as
  [fit][tinymbv2.train.trainer.fit] does), handed to torch as arrays; after each epoch the
  validation score, keeping the best-val weights as ``fit`` does.

Each task supplies its twin, its step (loss) and its score
([MirrorTask][benchmarks.torch_mirror.MirrorTask]); this module holds the rest: the
optimizer and schedule, the loop, the best-val weights, the reading of a run's
``metrics.json``, the table and the command line.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import benchmarks.openmp_wait  # noqa: F401  (first: the same OpenMP wait for both contestants)
import torch

from tinymbv2 import nn, optim
from tinymbv2.cli.args import add_data_args, add_fuse_arg, add_recipe_args, train_config
from tinymbv2.random import manual_seed
from tinymbv2.train import run_training
from tinymbv2.train.build import build_model, build_optimizer, build_scheduler, param_groups
from tinymbv2.train.config import TrainConfig


def our_initial_model(config: TrainConfig, data):
    """Our model as ``run_training`` builds it before step one (the seed set first).

    Args:
        config: The run's configuration.
        data: Its [SceneData][tinymbv2.train.run.SceneData] (the channels and classes).

    Returns:
        The plain tinymbv2 model, float32.
    """
    manual_seed(config.seed)
    return build_model(config, data.scenes.image_shape[0], data.scenes.num_classes)


def load_twin(tv: torch.nn.Module, model, dtype) -> torch.nn.Module:
    """``tv`` holding ``model``'s weights, buffers and dropout rates, in ``dtype``, train mode.

    Args:
        tv: The torch twin, with ``model``'s ``state_dict`` keys and module names.
        model: Our model.
        dtype: torch.float32 (a benchmark) or torch.float64 (a test).

    Returns:
        ``tv``.
    """
    tv.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    theirs = dict(tv.named_modules())
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout):  # a test switches ours off with p = 0
            theirs[name].p = module.p
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
        raise ValueError(f"torch_mirror: no torch mirror for {type(ours).__name__} (SGD, Adam, AdamW)")
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
    raise ValueError(f"torch_mirror: no torch mirror for {type(ours).__name__}")


@dataclass
class Mirror:
    """The torch side of a run: the twin, its optimizer and schedule.

    Args:
        tv: The torch twin ([load_twin][benchmarks.torch_mirror.load_twin]).
        optimizer: Its optimizer ([torch_optimizer][benchmarks.torch_mirror.torch_optimizer]).
        scheduler: Its schedule, or None.
        interval: ``"batch"`` or ``"epoch"``: when the schedule steps (ours').
        dtype: The torch dtype.
    """

    tv: torch.nn.Module
    optimizer: object
    scheduler: object
    interval: str
    dtype: torch.dtype


def mirror_recipe(config: TrainConfig, model, tv, steps_per_epoch: int):
    """torch's optimizer and schedule for ``tv``, built from ``config`` by our own builders.

    Our optimizer and schedule are built (on ``model``, which nothing else then steps) only
    to be read: torch's get their classes, groups and arguments.

    Args:
        config: The run's configuration.
        model: Our initial model (its parameters' names pick the twin's).
        tv: The torch twin.
        steps_per_epoch: The batches per epoch (the schedule spans them all).

    Returns:
        ``(optimizer, scheduler or None, interval)``.
    """
    ours = build_optimizer(config, param_groups(model, config.weight_decay))
    optimizer = torch_optimizer(ours, model, tv)
    scheduler, interval = build_scheduler(config, ours, steps_per_epoch)
    return optimizer, torch_scheduler(scheduler, optimizer), interval


def optimizer_step(mirror: Mirror, loss: torch.Tensor) -> float:
    """Backward, step, and a per-batch schedule: the end of every mirror's training step.

    Args:
        mirror: The [Mirror][benchmarks.torch_mirror.Mirror].
        loss: The batch's scalar loss, from the twin's forward.

    Returns:
        The loss's value.
    """
    mirror.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    mirror.optimizer.step()
    if mirror.scheduler is not None and mirror.interval == "batch":
        mirror.scheduler.step()
    return float(loss.item())


EVAL_BATCH = 32  # our evaluations' batch (eval mode: the batch does not change the outputs)


def eval_batches(mirror: Mirror, images, read: Callable) -> list:
    """The twin in eval mode (no gradients) over ``images`` in batches of ``EVAL_BATCH``;
    back in train mode after.

    Args:
        mirror: The [Mirror][benchmarks.torch_mirror.Mirror].
        images: (N, C, H, W) normalised images (numpy).
        read: ``read(outputs) -> list``: what to keep of a batch's outputs (the whole
            split's raw outputs need not fit in memory).

    Returns:
        The batches' ``read`` lists, joined.
    """
    mirror.tv.eval()
    found = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), EVAL_BATCH):
                x = torch.as_tensor(np.asarray(images[start:start + EVAL_BATCH]), dtype=mirror.dtype)
                found += read(mirror.tv(x))
    finally:
        mirror.tv.train()
    return found


def train_loop(config: TrainConfig, loader, mirror: Mirror, step: Callable, score: Callable | None,
               key: str, label: str, log=print) -> dict:
    """``config.epochs`` epochs of ``step`` over our loader's batches, as ``fit`` runs ours.

    Args:
        config: The run's configuration (epochs).
        loader: Our DataLoader; its "labels" are the batch's scene indices.
        mirror: The [Mirror][benchmarks.torch_mirror.Mirror].
        step: ``step(images, indices) -> loss`` (one training step of the twin).
        score: ``score() -> float``, the validation score after each epoch (higher is
            better; the best epoch's weights are kept); None: no validation.
        key: Where the validation scores go in the result (``"val_map50"``, ``"val_miou"``).
        label: The score's name in the log (``"mAP@0.5"``).
        log: Where the per-epoch lines go (None: nowhere).

    Returns:
        ``{"mirror", "losses" (every step's), "train_loss" (per epoch), key (per epoch),
        "best_epoch", "best_state", "train_seconds" (the whole loop, validation included, as
        our run's), "step_seconds" (the training passes only), "steps"}``.
    """
    out = {"mirror": mirror, "losses": [], "train_loss": [], key: [], "best_epoch": None,
           "best_state": None, "step_seconds": 0.0, "steps": 0}
    best = None
    start = time.perf_counter()
    for epoch in range(config.epochs):
        loader.set_epoch(epoch)
        mirror.tv.train()
        total, seen, tick = 0.0, 0, time.perf_counter()
        for images, indices in loader:
            value = step(images, indices)
            out["losses"].append(value)
            total, seen = total + value * len(indices), seen + len(indices)
        if mirror.scheduler is not None and mirror.interval == "epoch":
            mirror.scheduler.step()
        out["step_seconds"] += time.perf_counter() - tick
        out["steps"] += len(loader)
        out["train_loss"].append(total / max(seen, 1))
        line = f"torch epoch {epoch + 1:>3}/{config.epochs}  train loss {out['train_loss'][-1]:.4f}"
        if score is not None:
            value = score()
            out[key].append(value)
            if best is None or value > best:
                best, out["best_epoch"] = value, epoch + 1
                out["best_state"] = copy.deepcopy(mirror.tv.state_dict())
            line += f"  val {label} {value:.4f}"
        if log:
            log(f"{line}  {time.perf_counter() - tick:.1f}s")
    out["train_seconds"] = time.perf_counter() - start
    return out


def with_best_state(trained: dict, score: Callable, final):
    """``score()`` with the best-val weights loaded (``final`` when none were kept); the twin
    gets its final weights back.

    Args:
        trained: What [train_loop][benchmarks.torch_mirror.train_loop] returned.
        score: ``score() -> value`` of the twin as it stands.
        final: The value for the final weights.

    Returns:
        The best-val weights' value.
    """
    if trained["best_state"] is None:
        return final
    tv = trained["mirror"].tv
    current = copy.deepcopy(tv.state_dict())
    tv.load_state_dict(trained["best_state"])
    try:
        return score()
    finally:
        tv.load_state_dict(current)


def step_timing(trained: dict) -> dict:
    """The mirror's train seconds and seconds per step.

    Args:
        trained: What [train_loop][benchmarks.torch_mirror.train_loop] returned.

    Returns:
        ``{"train_seconds", "seconds_per_step"}``.
    """
    return {"train_seconds": trained["train_seconds"],
            "seconds_per_step": trained["step_seconds"] / max(trained["steps"], 1)}


def our_timing(metrics: dict, steps_per_epoch: int) -> dict:
    """The same timing from our run's ``metrics.json``.

    Args:
        metrics: A finished run's metrics.
        steps_per_epoch: Its batches per epoch.

    Returns:
        ``{"train_seconds", "seconds_per_step"}``; seconds per step from the epochs' training
        passes.
    """
    seconds = metrics["history"]["seconds"]
    return {"train_seconds": metrics["train_seconds"],
            "seconds_per_step": sum(seconds) / max(1, len(seconds) * steps_per_epoch)}


TIMING_ROWS = (("train seconds", "train_seconds", "{:.1f}"),
               ("seconds per step", "seconds_per_step", "{:.3f}"))


def table(ours: dict | None, theirs: dict, rows) -> str:
    """Ours against PyTorch, one figure a row, and the difference (ours - PyTorch).

    Args:
        ours: Our figures (None: not run).
        theirs: The mirror's.
        rows: ``(label, key, format)`` triples.

    Returns:
        The table's text.
    """
    lines = [f"{'':<24}{'tinymbv2':>12}{'PyTorch':>12}{'ours - torch':>14}"]
    for label, key, fmt in rows:
        mine = fmt.format(ours[key]) if ours else "-"
        diff = fmt.format(ours[key] - theirs[key]) if ours else "-"
        lines.append(f"{label:<24}{mine:>12}{fmt.format(theirs[key]):>12}{diff:>14}")
    return "\n".join(lines)


def read_run(run_dir, task: str, what: str, prog: str) -> tuple[TrainConfig, dict]:
    """The configuration and metrics of a finished run of ``task``.

    Args:
        run_dir: The run's folder (``tinymbv2 train --task TASK --out RUN_DIR``).
        task: The task it must be (``"detect"``, ``"segment"``).
        what: Its name in the error (``"detection"``).
        prog: The mirror's name in the errors.

    Returns:
        ``(config, metrics)``: the [TrainConfig][tinymbv2.train.config.TrainConfig] saved in
        its ``metrics.json`` (under ``"config"``), and the whole of that file.

    Raises:
        ValueError: The run is of another task, or it diverged (no test figures).
    """
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    config = TrainConfig.from_saved(metrics["config"])
    if config.task != task:
        raise ValueError(f"{prog}: {run_dir} is a {config.task!r} run, not a {what} run")
    config.validate()
    if metrics.get("diverged"):
        raise ValueError(f"{prog}: {run_dir} diverged ({metrics['diverged']}): no test figures")
    return config, metrics


@dataclass(frozen=True)
class MirrorTask:
    """What a task's mirror brings to [main][benchmarks.torch_mirror.main].

    Args:
        task: ``"detect"`` or ``"segment"``.
        what: Its run's name (``"detection"``, ``"segmentation"``).
        prog: The module's name (``"detect_train"``).
        data: ``data(config) -> SceneData``, as our run makes it.
        train: ``train(config, data, model) -> trained`` (the mirror's training).
        score: ``score(trained, data, num_classes) -> figures`` (the test figures).
        ours: ``ours(metrics, steps_per_epoch) -> figures`` from our ``metrics.json``.
        rows: The table's ``(label, key, format)`` rows.
        target: ``(label, key)`` of the figure the issue's 0.02 target is about.
        history: The trained dict's per-epoch keys copied into the result.
    """

    task: str
    what: str
    prog: str
    data: Callable
    train: Callable
    score: Callable
    ours: Callable
    rows: tuple
    target: tuple
    history: tuple


def main(spec: MirrorTask, doc: str, argv=None) -> dict:
    """Parse the arguments, train the mirror (and ours with ``--run-ours``), print the table.

    Args:
        spec: The task's [MirrorTask][benchmarks.torch_mirror.MirrorTask].
        doc: The module's docstring (its first line describes the command).
        argv: The arguments (None: the command line's).

    Returns:
        ``{"config", "torch", "ours" (None without a run of ours), "torch_threads", and the
        mirror's per-epoch ``spec.history``, each under ``"torch_" + key``}``.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_data_args(parser, default_dataset="mnist-scenes")
    add_recipe_args(parser)
    add_fuse_arg(parser)
    parser.set_defaults(task=spec.task)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--ours", metavar="RUN_DIR", help=f"a finished `tinymbv2 train --task {spec.task}` run")
    which.add_argument("--run-ours", metavar="OUT", help="run ours first (run_training) into OUT")
    parser.add_argument("--json", metavar="PATH", help="write the figures here too")
    args = parser.parse_args(argv)

    metrics = None
    if args.ours:
        config, metrics = read_run(args.ours, spec.task, spec.what, spec.prog)
    else:
        config = train_config(args, args.run_ours or f"runs/{spec.prog}_unused")
        if config.task != spec.task:
            parser.error(f"{spec.prog} mirrors a {spec.what} run (--task {spec.task})")
        if args.run_ours:
            metrics = run_training(config, progress=args.progress)
    data = spec.data(config)
    config = config.resolved(data.size, data.size)
    model = our_initial_model(config, data)
    threads = torch.get_num_threads()
    print(f"{data.scenes!r}; width {config.width}, {config.optimizer} lr {config.lr} "
          f"wd {config.weight_decay}, {config.schedule}, {config.epochs} epochs of "
          f"{len(data.loader)} batches of {config.batch_size}; torch {torch.__version__}, "
          f"its default {threads} threads")
    trained = spec.train(config, data, model)
    theirs = spec.score(trained, data, model.num_classes)
    ours = spec.ours(metrics, len(data.loader)) if metrics else None
    print(table(ours, theirs, spec.rows))
    if ours:
        label, key = spec.target
        gap = ours[key] - theirs[key]
        print(f"{label}: ours {'within' if abs(gap) <= 0.02 else 'NOT within'} 0.02 of "
              f"PyTorch's ({gap:+.4f})")
    result = {"config": config.__dict__, "torch": theirs, "ours": ours, "torch_threads": threads,
              **{"torch_" + key: trained[key] for key in spec.history}}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result
