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
temporary file behind; a later save of the same checkpoint deletes it once it is a
minute old ([remove_stale_temporaries][tinymbv2.train.checkpoint.remove_stale_temporaries]).

Reading checks what it reads: a file that is not an ``.npz``, a truncated one, one
without the ``__meta__`` document, a document that is not valid JSON, or a document
naming an array the file does not hold is a ``ValueError`` naming the file and what
is wrong. [read_checkpoint][tinymbv2.train.checkpoint.read_checkpoint] then checks the
parts a checkpoint must have (model, optimizer, scheduler, epoch, extra, and the random
state to resume exactly), each of its type, before anything is loaded; a model that does
not fit the saved weights is a one-line
[StateDictError][tinymbv2.nn.state.StateDictError] naming the file. A load that fails
leaves the model, optimizer, scheduler and random generator as they were.
"""
from __future__ import annotations

import copy
import glob
import json
import time
from pathlib import Path

import numpy as np

from ..atomic import write_atomically
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
    """Write a nested dict of arrays and plain values to ``path`` (.npz), atomically.

    Args:
        path: The file.
        state: Dicts, lists, numbers, strings and arrays.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    meta = _pack(state, arrays, "")
    members = {name.lstrip("/"): a for name, a in arrays.items()}
    meta_json = json.dumps(_rename(meta))
    remove_stale_temporaries(path)
    return write_atomically(path, lambda f: np.savez(f, **members, **{_META: np.array(meta_json)}))


# A temporary this old (seconds since its last write) is a killed write's, not a live one's:
# a writer creates its temporary and writes the whole checkpoint into it within seconds (a
# few MB; np.savez writes as it goes, so the file's time moves while it grows), then renames
# it. Another process saving the same checkpoint right now (a second run into the same
# folder, say) has a younger file, which must not be deleted under it.
STALE_AFTER_S = 60.0


def remove_stale_temporaries(path, older_than: float = STALE_AFTER_S) -> list[Path]:
    """Delete the temporary files an interrupted save of ``path`` left behind.

    The save is [save_state][tinymbv2.train.checkpoint.save_state]'s. The temporaries are
    named ``<name>.<random>.tmp`` ([write_atomically][tinymbv2.atomic.write_atomically]) and
    are as large as the checkpoint. Called before each save, so a run resumed after a
    kill cleans up at its first checkpoint. Only this checkpoint's temporaries are
    touched (``model.npz.*.tmp`` for ``model.npz``, not ``best.npz.*.tmp``), and only
    those not written for ``older_than`` seconds: a younger one may be another process's
    write in progress. A file that cannot be deleted is left where it is (the save itself
    does not depend on it).

    Args:
        path: The checkpoint file.
        older_than: The age, in seconds, of a temporary that is stale (``STALE_AFTER_S``).

    Returns:
        The paths deleted.
    """
    path = Path(path)
    removed = []
    now = time.time()
    for candidate in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
        try:
            if (candidate.is_file() and not candidate.is_symlink()
                    and now - candidate.stat().st_mtime >= older_than):
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
    """Read what ``save_state`` wrote; a missing, damaged or partial file names itself.

    The writer is [save_state][tinymbv2.train.checkpoint.save_state].

    Args:
        path: The file.

    Returns:
        The nested dict, arrays in their places.

    Raises:
        FileNotFoundError: No file.
        ValueError: Not an ``.npz``, truncated, no ``__meta__`` member, ``__meta__`` not
            valid JSON, or an array it refers to missing; one line with the file's path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError ...
        raise ValueError(f"load_checkpoint: {path} is not a readable .npz checkpoint, damaged or "
                         f"truncated ({type(exc).__name__}: {exc})") from exc
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
                         f"({type(exc).__name__}: {exc})") from None


def save_checkpoint(path, model, optimizer=None, scheduler=None, epoch: int = 0,
                    config: dict | None = None, rng_state: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Save model, optimizer, scheduler, epoch, RNG state and config in one .npz.

    Args:
        path: The file, written atomically.
        model: The model (its state_dict).
        optimizer: Its optimizer, or None.
        scheduler: Its schedule, or None.
        epoch: The epochs finished.
        config: The run's saved configuration.
        rng_state: The package's random generator state
            ([get_state][tinymbv2.random.get_state]).
        extra: Anything else, JSON-able with arrays (the history, the best weights).

    Returns:
        The path written.
    """
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


# The parts of a checkpoint (what save_checkpoint writes), each with the types it may have
# and what it is, for the message when it is missing or of another type.
_PARTS = {
    "model": ((dict,), "model weights", "a dict of arrays"),
    "optimizer": ((dict, type(None)), "optimizer state", "a dict or null"),
    "scheduler": ((dict, type(None)), "scheduler state", "a dict or null"),
    "epoch": ((int,), "epoch count", "an integer >= 0"),
    "extra": ((dict,), "training history ('extra')", "a dict"),
    "rng_state": ((dict,), "random generator state", "a dict"),
}


def read_checkpoint(path, restore_rng: bool = False) -> dict:
    """Read a checkpoint and check its parts, loading nothing.

    Besides what [load_state][tinymbv2.train.checkpoint.load_state] checks, each part must
    be there and of its type (the model a dict, the optimizer and scheduler a dict or null,
    the epoch an integer >= 0, extra a dict, and, with ``restore_rng``, the random
    generator's state a dict: without it a resumed run would not draw what the
    uninterrupted one drew).

    Args:
        path: The checkpoint file.
        restore_rng: The random state is needed (to resume exactly).

    Returns:
        ``{"model", "optimizer", "scheduler", "epoch", "config", "rng_state", "extra"}`` as
        [save_checkpoint][tinymbv2.train.checkpoint.save_checkpoint] wrote them.

    Raises:
        FileNotFoundError: No file.
        ValueError: A damaged file or a missing or mistyped part; one line naming the file
            and the part.
    """
    state = load_state(path)
    if state.get("format") != "tinymbv2-checkpoint-1":
        raise ValueError(f"load_checkpoint: {path} has unknown format {state.get('format')!r}")
    for key, (types, what, expected) in _PARTS.items():
        if key == "rng_state" and not restore_rng:
            continue
        if key not in state:
            raise ValueError(f"load_checkpoint: {path} holds no {what} (its {_META} has no "
                             f"{key!r}); not a complete tinymbv2 checkpoint")
        value = state[key]
        if (not isinstance(value, types) or isinstance(value, bool)
                or (key == "epoch" and value < 0)):
            raise ValueError(f"load_checkpoint: {path}: its {key!r} is {_shown(value)}, "
                             f"expected {expected}")
    for key in ("history", "best_state"):  # what fit keeps in extra
        if not isinstance(state["extra"].get(key, {}), dict):
            raise ValueError(f"load_checkpoint: {path}: its 'extra/{key}' is "
                             f"{_shown(state['extra'][key])}, expected a dict")
    return state


def _shown(value) -> str:
    """A number or a string as itself, anything else by its type ("a list")."""
    if isinstance(value, (bool, int, float, str)):
        return repr(value)
    return f"a {type(value).__name__}"


def load_checkpoint(path, model=None, optimizer=None, scheduler=None,
                    restore_rng: bool = False, state: dict | None = None) -> dict:
    """Load a checkpoint; copy its parts into the objects given. Returns the whole state.

    The file is read and checked by [read_checkpoint][tinymbv2.train.checkpoint.read_checkpoint].
    An optimizer or scheduler given must find its state in the checkpoint. The model is
    loaded strictly (every key, every shape); a load that fails anywhere (the model, the
    optimizer's or the scheduler's state, the random state) puts back what it had changed,
    so the objects are as they were, and raises one line naming the file.

    Args:
        path: The checkpoint file.
        model: The model to load the weights into, or None.
        optimizer: The optimizer to load its state into, or None.
        scheduler: The schedule to load its state into, or None.
        restore_rng: Also restore the package's random generator.
        state: What [read_checkpoint][tinymbv2.train.checkpoint.read_checkpoint] already
            returned for ``path``, so that the file is read once; None: read it.

    Returns:
        The checkpoint's state, as read_checkpoint returns it.

    Raises:
        FileNotFoundError: No file.
        ValueError: A damaged file, a missing part, or a state the objects refuse.
        StateDictError: Weights that do not fit the model
            ([StateDictError][tinymbv2.nn.state.StateDictError]).
    """
    from .. import random as _random

    state = read_checkpoint(path, restore_rng) if state is None else state
    for key, given in (("optimizer", optimizer), ("scheduler", scheduler)):
        if given is not None and state[key] is None:
            raise ValueError(f"load_checkpoint: {path} holds no {key} state to load into the "
                             f"{type(given).__name__} given (it was saved without one)")
    before = (model.state_dict() if model is not None else None,
              optimizer.state_dict() if optimizer is not None else None,
              copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
              _random.get_state() if restore_rng else None)
    try:
        if model is not None:
            model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if restore_rng:
            _random.set_state(state["rng_state"])
    except StateDictError as exc:  # the model's, before it changed: the same summary, named
        raise exc.where(f"load_checkpoint: {path}") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        _put_back(before, model, optimizer, scheduler)
        raise ValueError(f"load_checkpoint: {path}: cannot load its state "
                         f"({type(exc).__name__}: {exc}); nothing was changed") from None
    return state


def _put_back(before, model, optimizer, scheduler) -> None:
    """Undo a load that failed halfway: each object gets the state it had."""
    from .. import random as _random

    model_state, optimizer_state, scheduler_state, rng_state = before
    if model is not None:
        model.load_state_dict(model_state)
    if optimizer is not None:
        optimizer.load_state_dict(optimizer_state)
    if scheduler is not None:
        scheduler.load_state_dict(scheduler_state)
    if rng_state is not None:
        _random.set_state(rng_state)
