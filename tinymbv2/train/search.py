"""Hyper-parameter search (seed section 3.8): grid and random, with a results table.

A *grid* tries every combination of the listed values: thorough, but the cost
multiplies with each hyper-parameter. *Random* search draws ``n_trials``
configurations: for the same budget it tries more distinct values of the
hyper-parameters that matter (Bergstra & Bengio 2012). Each trial calls
``train_fn(config) -> dict`` (at least ``val_acc``); the table is written as
CSV and the best configuration (by validation accuracy, never test) as JSON.

A trial whose training diverged (a learning rate too high, say) is a result too: its
row has ``val_acc`` None and ``diverged`` saying where, and it is never the best.
A space that names no training setting, a range over a setting that is not a real
number, or a value a run would refuse is refused before the first trial
([check_space][tinymbv2.train.search.check_space]).
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np

from ..models import check_input_size
from .build import build_model
from .config import TrainConfig
from .run import run_training
from .trainer import TrainingDiverged

RANGES = ("log", "uniform")  # random search: ("log", lo, hi) or ("uniform", lo, hi)


def grid(space: dict) -> list[dict]:
    """Every combination of ``space``: ``{'lr': [0.1, 0.01], 'width': [0.5]}`` gives 2 configs."""
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def random_configs(space: dict, n_trials: int, seed: int = 0) -> list[dict]:
    """Draw ``n_trials`` configs from ``space``.

    Args:
        space: ``{setting: values}``: a list is sampled uniformly; a ``("log", lo, hi)``
            tuple log-uniformly (learning rates, weight decay); ``("uniform", lo, hi)``
            uniformly.
        n_trials: How many configs.
        seed: The seed of the draws.

    Returns:
        The configs, dicts of settings.

    Raises:
        ValueError: A value that is neither a list nor a range.
    """
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(n_trials):
        config = {}
        for key, spec in space.items():
            if _is_range(spec):
                kind, lo, hi = spec
                if kind == "log":
                    config[key] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
                else:
                    config[key] = float(rng.uniform(lo, hi))
            elif isinstance(spec, (list, tuple)) and len(spec) > 0:
                config[key] = spec[int(rng.integers(len(spec)))]
            else:
                raise ValueError(f"random_configs: expected a list or ('log'|'uniform', lo, hi) "
                                 f"for {key!r}, got {spec!r}")
            if isinstance(config[key], np.generic):
                config[key] = config[key].item()
        configs.append(config)
    return configs


def run_search(train_fn, configs: list[dict], out_dir=None, log=print) -> dict:
    """Run each config; write ``results.csv`` and ``best.json`` under ``out_dir``.

    ``val_acc`` None marks a trial that diverged: it is in the table, never the best.

    Args:
        train_fn: ``train_fn(config) -> dict`` of metrics, at least ``val_acc``.
        configs: The configs to try.
        out_dir: Where the table goes; None: nowhere.
        log: Where the progress lines go.

    Returns:
        ``{'rows': [...], 'best': row}``, each row the config plus the metrics ``train_fn``
        returned.

    Raises:
        ValueError: Every trial diverged (after the table is written).
    """
    rows = []
    for i, config in enumerate(configs):
        metrics = train_fn(dict(config))
        if "val_acc" not in metrics:
            raise ValueError(f"run_search: train_fn must return 'val_acc', got keys {sorted(metrics)}")
        row = {"trial": i + 1, **config, **metrics}
        rows.append(row)
        if log:
            result = ("diverged" if metrics["val_acc"] is None
                      else f"val_acc {metrics['val_acc']:.4f}")
            log("trial {:>2}: {}  ->  {}".format(
                i + 1, ", ".join(f"{k}={_fmt(v)}" for k, v in config.items()), result))
    finished = [r for r in rows if r["val_acc"] is not None]
    best = max(finished, key=lambda r: r["val_acc"]) if finished else None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(out / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        if best is not None:
            (out / "best.json").write_text(json.dumps(best, indent=2) + "\n")
    if best is None:
        raise ValueError(f"run_search: every one of the {len(rows)} trials diverged; try lower "
                         f"learning rates" + (f" (the table is in {out_dir}/results.csv)"
                                              if out_dir is not None else ""))
    return {"rows": rows, "best": best}


def _is_range(spec) -> bool:
    return isinstance(spec, tuple) and len(spec) > 0 and spec[0] in RANGES


# The type of each TrainConfig field, as written in the class ("float", "int | None", ...).
# A range draws real numbers: only the "float" fields take one; an integer setting (epochs,
# batch_size, shift, ...) would refuse the 1.91 a range draws at its first trial.
FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def check_space(base: TrainConfig, space: dict, kind: str = "grid") -> None:
    """Refuse, before any trial runs, a search that a trial would fail on.

    Refused: a name that is not a field of ``base``; a range over a field that is not a
    real number (give a list of values); a value a run refuses
    ([TrainConfig.validate][tinymbv2.train.config.TrainConfig.validate]; for a random
    search's range, both of its ends; a grid tries a range's items as values, and refuses
    them); an ``image_size`` below the smallest the trial's network takes
    ([smallest_input_size][tinymbv2.models.input_size.smallest_input_size]).

    A dataset whose own images are smaller than a trial's network takes (with no
    ``image_size``) is known only once it is loaded: that trial's ``run_training`` refuses it.

    Args:
        base: The [TrainConfig][tinymbv2.train.config.TrainConfig] the trials start from.
        space: ``{setting: values or range}``.
        kind: ``"grid"`` or ``"random"``.

    Raises:
        ValueError: One line naming the setting.
    """
    fields = {f.name for f in dataclasses.fields(base)} - {"out"}
    unknown = sorted(set(space) - fields)
    if unknown:
        raise ValueError(f"search: the space names {unknown}, which are not training "
                         f"settings; expected some of {sorted(fields)}")
    for key, spec in space.items():
        if not isinstance(spec, (list, tuple)) or not spec:
            raise ValueError(f"search: the space's {key!r} is {spec!r}; expected a non-empty "
                             f"list of values (or, for a random search, a range)")
        if kind == "random" and _is_range(spec) and FIELD_TYPES[key] != "float":
            raise ValueError(f"search: the space's {key!r} is a range, which draws real "
                             f"numbers, but {key} takes {_kind(FIELD_TYPES[key])}: give a list "
                             f"of the values to try instead")
    ends = {k: [v[1], v[2]] if kind == "random" and _is_range(v) else v
            for k, v in space.items()}
    models = {}  # a network per shape, built once: its strides give the smallest image
    for trial in grid(ends):  # every value a trial can take (a range: between its ends)
        try:
            config = dataclasses.replace(base, **trial).validate()
        except (ValueError, TypeError) as exc:
            raise ValueError(f"search: the space gives {json.dumps(trial)}, which a training "
                             f"run refuses ({exc})") from None
        if config.image_size is not None:
            shape = (config.arch, config.width, config.small_input)
            if shape not in models:
                models[shape] = build_model(config, in_channels=1, num_classes=2)
            check_input_size(models[shape], config.image_size,
                             f"search (trial {json.dumps(trial)})", "image_size")


def _kind(annotation: str) -> str:
    return ("whole numbers" if "int" in annotation else "True or False" if annotation == "bool"
            else "names")


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def search_job(base_config, space: dict, kind: str = "grid", n_trials: int = 8, seed: int = 0,
               out_dir="runs/search", progress: bool = False, log=print) -> dict:
    """Train one short run per configuration and tabulate validation accuracy.

    Selection is by the best validation accuracy of the run, never the test split.

    Args:
        base_config: The [TrainConfig][tinymbv2.train.config.TrainConfig] each trial starts
            from.
        space: The settings a trial overrides (e.g. lr, weight_decay, width, batch_size).
        kind: ``"grid"`` or ``"random"``.
        n_trials: The trials of a random search.
        seed: The seed of a random search's draws.
        out_dir: The folder; trial N trains into ``out_dir/trial_N``.
        progress: Show progress bars.
        log: Where the progress lines go.

    Returns:
        What [run_search][tinymbv2.train.search.run_search] returns.

    Raises:
        ValueError: A space [check_space][tinymbv2.train.search.check_space] refuses, or
            every trial diverged.
    """
    check_space(base_config, space, kind)
    configs = grid(space) if kind == "grid" else random_configs(space, n_trials, seed)
    counter = iter(range(1, len(configs) + 1))

    def train_fn(overrides):
        trial = next(counter)
        cfg = dataclasses.replace(base_config, **overrides, out=f"{out_dir}/trial_{trial}")
        try:
            metrics = run_training(cfg, progress=progress, log=lambda *_: None)
        except TrainingDiverged as exc:  # a result of the search, not a failure of it
            return {"val_acc": None, "diverged": f"epoch {exc.epoch} step {exc.step}"}
        history = metrics["history"]
        return {"val_acc": max(history["val_acc"]), "final_train_acc": history["train_acc"][-1],
                "test_acc": metrics["test_accuracy"], "seconds": round(metrics["train_seconds"], 1)}

    return run_search(train_fn, configs, out_dir, log=log)
