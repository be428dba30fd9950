"""Hyper-parameter search (seed section 3.8): grid and random, with a results table.

A *grid* tries every combination of the listed values: thorough, but the cost
multiplies with each hyper-parameter. *Random* search draws ``n_trials``
configurations: for the same budget it tries more distinct values of the
hyper-parameters that matter (Bergstra & Bengio 2012). Each trial calls
``train_fn(config) -> dict`` (at least ``val_acc``); the table is written as
CSV and the best configuration (by validation accuracy, never test) as JSON.

A trial whose training diverged (a learning rate too high, say) is a result too: its
row has ``val_acc`` None and ``diverged`` saying where, and it is never the best.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np

from .run import run_training
from .trainer import TrainingDiverged


def grid(space: dict) -> list[dict]:
    """Every combination: {'lr': [0.1, 0.01], 'width': [0.5]} -> 2 configs."""
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def random_configs(space: dict, n_trials: int, seed: int = 0) -> list[dict]:
    """Draw ``n_trials`` configs. A list is sampled uniformly; a ``("log", lo, hi)``
    tuple log-uniformly (learning rates, weight decay); ``("uniform", lo, hi)`` uniformly."""
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(n_trials):
        config = {}
        for key, spec in space.items():
            if isinstance(spec, tuple) and spec and spec[0] in ("log", "uniform"):
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
    """Run each config; write ``results.csv`` and ``best.json`` under out_dir.

    Returns {'rows': [...], 'best': row} where each row is the config plus the
    metrics ``train_fn`` returned. ``val_acc`` None marks a trial that diverged: it is in
    the table, never the best; when every trial diverged, ``ValueError`` (after the table).
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


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def search_job(base_config, space: dict, kind: str = "grid", n_trials: int = 8, seed: int = 0,
               out_dir="runs/search", progress: bool = False, log=print) -> dict:
    """Train one short run per configuration and tabulate validation accuracy.

    base_config: a TrainConfig; each trial overrides the keys in ``space``
    (e.g. lr, weight_decay, width, batch_size) and trains into out_dir/trial_N.
    Selection is by the best validation accuracy of the run, never the test split.
    """
    configs = grid(space) if kind == "grid" else random_configs(space, n_trials, seed)
    unknown = set(space) - {f.name for f in dataclasses.fields(base_config)}
    if unknown:
        raise ValueError(f"search: unknown hyper-parameters {sorted(unknown)}")
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
