"""tinymbv2.train.checkpoint: one .npz, written atomically, read without pickle."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tinymbv2.train import load_checkpoint, load_state, save_checkpoint, save_state
from tinymbv2.train.checkpoint import remove_stale_temporaries


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


def test_a_killed_write_leaves_a_temporary_file_that_the_next_save_removes(tmp_path):
    path = save_state(tmp_path / "model.npz", {"a": np.ones(3)})
    stale = [tmp_path / "model.npz.k1ll3d_1.tmp", tmp_path / "model.npz.x9.tmp"]
    for s in stale:  # what a process killed inside save_state leaves: half a checkpoint
        s.write_bytes(b"PK\x03\x04" + bytes(1000))
    others = [tmp_path / "best.npz.abc.tmp", tmp_path / "model.npz", tmp_path / "notes.tmp"]
    others[0].write_bytes(b"another checkpoint's")
    others[2].write_text("not ours")
    save_state(path, {"a": np.zeros(3)})
    assert sorted(os.listdir(tmp_path)) == ["best.npz.abc.tmp", "model.npz", "notes.tmp"]
    np.testing.assert_array_equal(load_state(path)["a"], np.zeros(3))
    assert remove_stale_temporaries(path) == []  # nothing left to remove


def _write(path, members):
    np.savez(path, **members)
    return path


def test_partial_or_damaged_checkpoints_name_the_file_and_what_is_missing(tmp_path):
    good = save_state(tmp_path / "good.npz", {"model": {"w": np.ones(2), "b": np.zeros(1)}})
    with np.load(good, allow_pickle=False) as data:
        members = {k: data[k] for k in data.files}
    partial = _write(tmp_path / "partial.npz", {k: v for k, v in members.items() if k != "model/w"})
    with pytest.raises(ValueError, match=r"partial\.npz is incomplete: it has no array 'model/w', "
                                         r"which its __meta__ lists"):
        load_state(partial)
    bad_json = _write(tmp_path / "json.npz", {**members, "__meta__": np.array('{"model": ')})
    with pytest.raises(ValueError, match=r"json\.npz: its __meta__ member is not valid JSON "
                                         r"\(Expecting value"):
        load_state(bad_json)
    not_dict = _write(tmp_path / "list.npz", {**members, "__meta__": np.array("[1]")})
    with pytest.raises(ValueError, match=r"list\.npz: its __meta__ member holds a list"):
        load_state(not_dict)
    malformed = _write(tmp_path / "items.npz",
                       {**members, "__meta__": np.array('{"opt": {"__items__": [5]}}')})
    with pytest.raises(ValueError, match=r"items\.npz: its __meta__ member is malformed"):
        load_state(malformed)
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut\.npz is not a readable \.npz checkpoint, damaged or "
                                         r"truncated \(BadZipFile"):
        load_state(truncated)


def test_a_model_that_does_not_fit_is_one_line_naming_the_checkpoint(tmp_path):
    from tinymbv2.models import mobilenet_v2
    from tinymbv2.nn import StateDictError

    small = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)
    path = save_checkpoint(tmp_path / "small.npz", small)
    wide = mobilenet_v2(width_mult=1.0, num_classes=10, in_channels=1, small_input=True, seed=1)
    before = wide.state_dict()
    with pytest.raises(StateDictError) as info:
        load_checkpoint(path, wide)
    message = str(info.value)
    assert message.startswith(f"load_checkpoint: {path}: load_state_dict: MobileNetV2 cannot")
    assert "\n" not in message and message.count("shape mismatch") == StateDictError.SHOWN
    n = len(info.value.problems)
    assert n == len(info.value.mismatched) > 200 and f"{n} problem(s)" in message
    assert info.value.mismatched["features.0.0.weight"] == ((32, 1, 3, 3), (16, 1, 3, 3))
    assert len(info.value.details.splitlines()) == n
    for k, v in wide.state_dict().items():  # nothing was copied
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match=r"no-model\.npz holds no model weights"):
        load_checkpoint(save_state(tmp_path / "no-model.npz", {"format": "tinymbv2-checkpoint-1"}),
                        wide)
