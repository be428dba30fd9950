"""tinymbv2.train.checkpoint: one .npz, written atomically, read without pickle."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tinymbv2.train import load_checkpoint, load_state, save_checkpoint, save_state
from tinymbv2.train.checkpoint import STALE_AFTER_S, read_checkpoint, remove_stale_temporaries


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


def _age(path, seconds):
    """Make ``path`` look last written ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_killed_write_leaves_a_temporary_file_that_the_next_save_removes(tmp_path):
    path = save_state(tmp_path / "model.npz", {"a": np.ones(3)})
    stale = [tmp_path / "model.npz.k1ll3d_1.tmp", tmp_path / "model.npz.x9.tmp"]
    for s in stale:  # what a process killed inside save_state leaves: half a checkpoint
        s.write_bytes(b"PK\x03\x04" + bytes(1000))
        _age(s, STALE_AFTER_S + 5)  # killed a while ago
    others = [tmp_path / "best.npz.abc.tmp", tmp_path / "model.npz", tmp_path / "notes.tmp"]
    others[0].write_bytes(b"another checkpoint's")
    others[2].write_text("not ours")
    for other in others:
        _age(other, STALE_AFTER_S + 5)
    save_state(path, {"a": np.zeros(3)})
    assert sorted(os.listdir(tmp_path)) == ["best.npz.abc.tmp", "model.npz", "notes.tmp"]
    np.testing.assert_array_equal(load_state(path)["a"], np.zeros(3))
    assert remove_stale_temporaries(path) == []  # nothing left to remove


def test_a_temporary_being_written_now_is_left_to_its_writer(tmp_path):
    path = save_state(tmp_path / "model.npz", {"a": np.ones(3)})
    live = tmp_path / "model.npz.w0rk1ng.tmp"  # another process's save, in progress
    live.write_bytes(b"PK\x03\x04" + bytes(1000))
    _age(live, STALE_AFTER_S - 10)  # written to within the last minute
    save_state(path, {"a": np.zeros(3)})
    assert live.exists() and remove_stale_temporaries(path) == []
    _age(live, STALE_AFTER_S + 1)  # its writer is gone: now it is stale
    assert remove_stale_temporaries(path) == [live] and not live.exists()


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


def _members(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _with_meta(src, dst, change):
    """``src`` written again to ``dst`` with ``change(meta)`` applied to its __meta__ document."""
    import json

    members = _members(src)
    meta = json.loads(str(members["__meta__"]))
    change(meta)
    members["__meta__"] = np.array(json.dumps(meta))
    np.savez(dst, **members)
    return dst


def _run_state(tmp_path):
    """A checkpoint as a training run writes it (SGD with momentum, one-cycle), and fresh
    objects of the same shapes to load it into."""
    from tinymbv2 import optim
    from tinymbv2.models import mobilenet_v2

    def parts(seed):
        model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True,
                             seed=seed)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
        return model, opt, sched

    model, opt, sched = parts(0)
    for p in model.parameters():  # a momentum buffer for every parameter
        opt.state[id(p)] = {"momentum_buffer": np.full(p.shape, 0.5, dtype=p.data.dtype)}
    sched.step()
    path = save_checkpoint(tmp_path / "model.npz", model, opt, sched, epoch=3,
                           config={"width": 0.35}, extra={"history": {"epoch": [1, 2, 3]}})
    return path, parts(1)


@pytest.mark.parametrize("key,change,message", [
    ("extra", lambda m: m.pop("extra"), "holds no training history ('extra') (its __meta__ has "
                                        "no 'extra'); not a complete tinymbv2 checkpoint"),
    ("optimizer", lambda m: m.pop("optimizer"), "holds no optimizer state (its __meta__ has no "
                                                "'optimizer')"),
    ("scheduler", lambda m: m.pop("scheduler"), "holds no scheduler state"),
    ("epoch", lambda m: m.pop("epoch"), "holds no epoch count"),
    ("rng_state", lambda m: m.pop("rng_state"), "holds no random generator state (its __meta__ "
                                                "has no 'rng_state')"),
    ("epoch", lambda m: m.update(epoch="3"), "its 'epoch' is '3', expected an integer >= 0"),
    ("epoch", lambda m: m.update(epoch=-1), "its 'epoch' is -1, expected an integer >= 0"),
    ("optimizer", lambda m: m.update(optimizer=[1]), "its 'optimizer' is a list, expected a "
                                                     "dict or null"),
    ("extra", lambda m: m["extra"].update(history=[1]), "its 'extra/history' is a list, "
                                                        "expected a dict"),
])
def test_a_partial_checkpoint_names_the_missing_part_and_loads_nothing(tmp_path, key, change,
                                                                      message):
    import tinymbv2

    good, (model, opt, sched) = _run_state(tmp_path)
    bad = _with_meta(good, tmp_path / "partial.npz", change)
    before = (model.state_dict(), opt.state_dict(), sched.state_dict())
    tinymbv2.manual_seed(5)
    draw = tinymbv2.random.get_state()
    with pytest.raises(ValueError) as info:
        load_checkpoint(bad, model, opt, sched, restore_rng=True)
    text = str(info.value)
    assert text.startswith(f"load_checkpoint: {bad}") and message in text and "\n" not in text
    for k, v in model.state_dict().items():  # nothing was loaded
        np.testing.assert_array_equal(v, before[0][k], err_msg=k)
    assert opt.state == {} and sched.state_dict() == before[2]
    assert tinymbv2.random.get_state() == draw
    # the whole checkpoint loads
    load_checkpoint(good, model, opt, sched, restore_rng=True)
    assert len(opt.state) == len(list(model.parameters())) and sched.last_epoch == 1


def test_a_checkpoint_without_rng_state_still_loads_weights_but_not_to_resume(tmp_path):
    good, (model, opt, sched) = _run_state(tmp_path)
    bad = _with_meta(good, tmp_path / "no-rng.npz", lambda m: m.pop("rng_state"))
    load_checkpoint(bad, model)  # weights only (eval, predict): the random state is not needed
    assert read_checkpoint(bad)["epoch"] == 3
    with pytest.raises(ValueError, match="holds no random generator state"):
        read_checkpoint(bad, restore_rng=True)


def test_an_optimizer_state_that_fails_to_load_puts_the_model_back(tmp_path):
    """The model loads first; the optimizer's state then fails (another optimizer's): the
    model gets its own weights back."""
    from tinymbv2 import optim

    good, (model, _, _) = _run_state(tmp_path)
    before = model.state_dict()
    adam = optim.Adam(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match=r"load_checkpoint: .*model\.npz: cannot load its state "
                                         r"\(ValueError: Adam\.load_state_dict: .*; nothing was "
                                         r"changed"):
        load_checkpoint(good, model, adam)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert adam.state == {}
    with pytest.raises(ValueError, match="holds no optimizer state to load into the SGD given"):
        load_checkpoint(save_checkpoint(tmp_path / "weights.npz", model), model,
                        optim.SGD(model.parameters(), lr=0.1))
