"""tinymbv2.train.checkpoint: one .npz, written atomically, read without pickle."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tinymbv2.train import load_state, save_state


def test_state_round_trip_loads_without_pickle(tmp_path):
    state = {"model": {"w": np.arange(6.0).reshape(2, 3), "n": np.array(3, dtype=np.int64)},
             "opt": {"state": {0: {"buf": np.ones(2)}}, "groups": [{"lr": 0.1, "params": [0]}]},
             "epoch": 4, "name": "run", "none": None,
             "rng": {"state": {"state": 2**100, "inc": 7}}}
    path = save_state(tmp_path / "c.npz", state)
    with np.load(path, allow_pickle=False) as data:  # nothing pickled inside
        assert "model/w" in data.files
    back = load_state(path)
    np.testing.assert_array_equal(back["model"]["w"], state["model"]["w"])
    assert back["opt"]["state"][0]["buf"].tolist() == [1.0, 1.0]  # int keys survive
    assert back["epoch"] == 4 and back["none"] is None and back["rng"]["state"]["state"] == 2**100


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    path = save_state(tmp_path / "c.npz", {"a": np.ones(3)})
    with pytest.raises(TypeError, match="cannot store a object"):
        save_state(path, {"a": np.zeros(3), "bad": object()})
    np.testing.assert_array_equal(load_state(path)["a"], np.ones(3))
    assert os.listdir(tmp_path) == ["c.npz"]  # no temp file left behind


def test_loading_a_damaged_or_missing_file_names_it(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        load_state(bad)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_state(tmp_path / "missing.npz")
