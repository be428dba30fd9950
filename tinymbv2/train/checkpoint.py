"""Checkpoints: one ``.npz`` holding everything needed to resume a run exactly.

Contents: the model's state_dict, the optimizer's and scheduler's state, the
epoch, the random generator's state and the run's configuration. Arrays are
stored as npz members; everything else (nested dicts, lists, numbers,
strings) goes into one JSON document stored as a string member, with each array
replaced by a reference ``{"__array__": "member name"}``. So the file loads
with ``numpy.load(path, allow_pickle=False)``: no pickled Python objects, nothing
executed on load.

Writes are atomic: the data goes to a temporary file in the same folder
(``model.npz.<random>.tmp``), which is then renamed over the target
(``os.replace``), so a crash mid-write leaves the previous checkpoint intact. A write
killed midway (the process gone, nothing left to clean up after it) leaves its
temporary file behind; the next save of the same checkpoint deletes it.

Reading checks what it reads: a file that is not an ``.npz``, a truncated one, one
without the ``__meta__`` document, a document that is not valid JSON, or a document
naming an array the file does not hold is a ``ValueError`` naming the file and what
is wrong; a model that does not fit the saved weights is a one-line
:class:`~tinymbv2.nn.StateDictError` naming the file.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..nn import StateDictError

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


class _MissingArray(LookupError):
    """An array the ``__meta__`` document refers to is not in the file."""


def _unpack(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            if obj["__array__"] not in arrays:
                raise _MissingArray(obj["__array__"])
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
    remove_stale_temporaries(path)
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


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the temporary files an interrupted :func:`save_state` of ``path`` left behind.

    They are named ``<name>.<random>.tmp`` (``tempfile.mkstemp`` in ``path``'s folder) and
    are as large as the checkpoint. Called before each save, so a run resumed after a
    kill cleans up at its first checkpoint. Only this checkpoint's temporaries are
    touched (``model.npz.*.tmp`` for ``model.npz``, not ``best.npz.*.tmp``); a file that
    cannot be deleted is left where it is (the save itself does not depend on it).
    Returns the paths deleted.
    """
    path = Path(path)
    removed = []
    for candidate in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
        try:
            if candidate.is_file() and not candidate.is_symlink():
                candidate.unlink()
                removed.append(candidate)
        except OSError:  # gone already (another cleanup), or not ours to delete
            pass
    return removed


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
    """Read what :func:`save_state` wrote; a missing, damaged or partial file names itself.

    Raises ``FileNotFoundError`` (no file) or ``ValueError`` (not an ``.npz``, truncated,
    no ``__meta__`` member, ``__meta__`` not valid JSON, an array it refers to missing),
    each message one line with the file's path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError ...
        raise ValueError(f"load_checkpoint: {path} is not a readable .npz checkpoint, damaged or "
                         f"truncated ({type(exc).__name__}: {_one_line(exc)})") from exc
    if _META not in arrays:
        raise ValueError(f"load_checkpoint: {path} has no {_META} member; not a tinymbv2 checkpoint")
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except json.JSONDecodeError as exc:
        raise ValueError(f"load_checkpoint: {path}: its {_META} member is not valid JSON "
                         f"({exc}); the file is damaged") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"load_checkpoint: {path}: its {_META} member holds a "
                         f"{type(meta).__name__}, expected a JSON object")
    try:
        return _unpack(meta, arrays)
    except _MissingArray as exc:
        raise ValueError(f"load_checkpoint: {path} is incomplete: it has no array "
                         f"{exc.args[0]!r}, which its {_META} lists") from None
    except (TypeError, ValueError) as exc:  # an __items__ list that is not [key, value] pairs
        raise ValueError(f"load_checkpoint: {path}: its {_META} member is malformed "
                         f"({type(exc).__name__}: {_one_line(exc)})") from None


def _one_line(exc) -> str:
    return " ".join(str(exc).split())


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
        if not isinstance(state.get("model"), dict):
            raise ValueError(f"load_checkpoint: {path} holds no model weights")
        try:
            model.load_state_dict(state["model"])
        except StateDictError as exc:  # the same one-line summary, naming the file
            raise exc.where(f"load_checkpoint: {path}") from None
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and state.get("rng_state"):
        _random.set_state(state["rng_state"])
    return state
