"""Checkpoints: one ``.npz`` holding everything needed to resume a run exactly.

Contents: the model's state_dict, the optimizer's and scheduler's state, the
epoch, the random generator's state and the run's configuration. Arrays are
stored as npz members; everything else (nested dicts, lists, numbers,
strings) goes into one JSON document stored as a string member, with each array
replaced by a reference ``{"__array__": "member name"}``. So the file loads
with ``numpy.load(path, allow_pickle=False)``: no pickled Python objects, nothing
executed on load.

Writes are atomic: the data goes to a temporary file in the same folder, which
is then renamed over the target (``os.replace``), so a crash mid-write leaves
the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

_META = "__meta__"


def _pack(obj, arrays: dict, prefix: str):
    """Replace every array in a nested structure by a reference; collect the arrays."""
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _pack(v, arrays, f"{prefix}/{k}") for k, v in obj.items()}
        # keys that JSON would turn into strings (optimizer state is keyed by int)
        return {"__items__": [[_key(k), _pack(v, arrays, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_pack(v, arrays, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # NumPy (or CuPy) array
        array = obj.get() if hasattr(obj, "get") and not isinstance(obj, np.ndarray) else obj
        arrays[prefix] = np.asarray(array)
        return {"__array__": prefix}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"save_checkpoint: cannot store a {type(obj).__name__} at {prefix!r}")


def _key(k):
    if isinstance(k, (np.integer, int)) and not isinstance(k, bool):
        return int(k)
    if isinstance(k, str):
        return k
    raise TypeError(f"save_checkpoint: cannot store a dict key of type {type(k).__name__}")


def _unpack(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        if set(obj) == {"__items__"}:
            return {k: _unpack(v, arrays) for k, v in obj["__items__"]}
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj


def save_state(path, state: dict) -> Path:
    """Write a nested dict of arrays and plain values to ``path`` (.npz), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    meta = _pack(state, arrays, "")
    members = {name.lstrip("/"): a for name, a in arrays.items()}
    meta_json = json.dumps(_rename(meta))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **members, **{_META: np.array(meta_json)})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _rename(obj):
    """Member names in references lose the leading '/' like the members themselves."""
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return {"__array__": obj["__array__"].lstrip("/")}
        if set(obj) == {"__items__"}:
            return {"__items__": [[k, _rename(v)] for k, v in obj["__items__"]]}
        return {k: _rename(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rename(v) for v in obj]
    return obj


def load_state(path) -> dict:
    """Read what :func:`save_state` wrote; a missing or damaged file names itself."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError ...
        raise ValueError(f"load_checkpoint: {path} is not a readable .npz checkpoint ({exc})") from exc
    if _META not in arrays:
        raise ValueError(f"load_checkpoint: {path} has no {_META} member; not a tinymbv2 checkpoint")
    meta = json.loads(str(arrays.pop(_META)))
    return _unpack(meta, arrays)


def save_checkpoint(path, model, optimizer=None, scheduler=None, epoch: int = 0,
                    config: dict | None = None, rng_state: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Save model, optimizer, scheduler, epoch, RNG state and config in one .npz."""
    from .. import random as _random

    state = {
        "format": "tinymbv2-checkpoint-1",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "config": config or {},
        "rng_state": rng_state if rng_state is not None else _random.get_state(),
        "extra": extra or {},
    }
    return save_state(path, state)


def load_checkpoint(path, model=None, optimizer=None, scheduler=None,
                    restore_rng: bool = False) -> dict:
    """Load a checkpoint; copy its parts into the objects given. Returns the whole state.

    The model is loaded strictly (every key, every shape), so a mismatch raises
    before any weight changes.
    """
    from .. import random as _random

    state = load_state(path)
    if state.get("format") != "tinymbv2-checkpoint-1":
        raise ValueError(f"load_checkpoint: {path} has unknown format {state.get('format')!r}")
    if model is not None:
        model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and state.get("rng_state"):
        _random.set_state(state["rng_state"])
    return state
