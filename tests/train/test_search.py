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
