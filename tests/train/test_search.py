"""tinymbv2.train.search: grid and random configurations, and the results table."""
from __future__ import annotations

import csv
import json

import pytest

from tinymbv2.train import grid, random_configs, run_search


def test_grid_and_random_search_write_a_table(tmp_path):
    configs = grid({"lr": [0.1, 0.01], "width": [0.5, 1.0]})
    assert len(configs) == 4 and {"lr": 0.01, "width": 1.0} in configs
    drawn = random_configs({"lr": ("log", 1e-4, 1e-1), "batch": [32, 64]}, 20, seed=3)
    assert len(drawn) == 20 and all(1e-4 <= c["lr"] <= 1e-1 for c in drawn)
    assert drawn == random_configs({"lr": ("log", 1e-4, 1e-1), "batch": [32, 64]}, 20, seed=3)
    result = run_search(lambda c: {"val_acc": c["lr"] * c["width"]}, configs, tmp_path, log=None)
    assert result["best"]["lr"] == 0.1 and result["best"]["width"] == 1.0
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 4 and set(rows[0]) == {"trial", "lr", "width", "val_acc"}
    assert json.loads((tmp_path / "best.json").read_text())["val_acc"] == pytest.approx(0.1)


def test_a_diverged_trial_is_a_row_never_the_best(tmp_path):
    def train_fn(c):
        if c["lr"] > 1:
            return {"val_acc": None, "diverged": "epoch 1 step 3"}
        return {"val_acc": c["lr"]}

    lines = []
    result = run_search(train_fn, grid({"lr": [0.1, 1e6, 0.5]}), tmp_path, log=lines.append)
    assert result["best"]["lr"] == 0.5
    assert lines[1] == "trial  2: lr=1e+06  ->  diverged"
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["diverged"] for r in rows] == ["", "epoch 1 step 3", ""]
    with pytest.raises(ValueError, match="run_search: every one of the 2 trials diverged; try "
                                         "lower learning rates"):
        run_search(train_fn, grid({"lr": [1e5, 1e6]}), tmp_path / "all", log=None)
    assert len(list(csv.DictReader(open(tmp_path / "all" / "results.csv")))) == 2


def test_search_job_records_a_trial_that_diverges_and_goes_on(tmp_path):
    from tinymbv2.train import TrainConfig, search_job

    base = TrainConfig(dataset="digits", width=0.35, epochs=1, batch_size=128)
    result = search_job(base, {"lr": [1e6, 0.05]}, out_dir=tmp_path, log=None)
    diverged, fine = result["rows"]
    assert diverged["val_acc"] is None and diverged["diverged"].startswith("epoch 1 step ")
    assert result["best"] is fine and fine["val_acc"] > 0
    metrics = json.loads((tmp_path / "trial_1" / "metrics.json").read_text())
    assert metrics["diverged"]["what"] == "loss"
