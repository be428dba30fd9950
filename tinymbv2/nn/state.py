"""Loading a ``state_dict``: validate every entry first, then copy in place.

A checkpoint that does not fit (a missing key, an unexpected key, a wrong shape)
is reported in one :class:`StateDictError` that lists every offending key, and
the model is left exactly as it was: nothing is copied until everything checks.
"""
from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping

import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module


class StateDictError(ValueError):
    """``load_state_dict`` found missing/unexpected keys or wrong shapes (all listed)."""


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def to_numpy(value) -> np.ndarray:
    """A host NumPy array from a Tensor, ndarray, CuPy array or torch tensor."""
    if isinstance(value, Tensor):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return value.detach().cpu().numpy()
    if hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):  # CuPy
        return value.get()
    return np.asarray(value)


def load_state(own: dict, state_dict, strict: bool, owner: str) -> IncompatibleKeys:
    """Copy ``state_dict`` values into the Tensors of ``own`` ({key: Tensor}), in place.

    Values are cast to each target's dtype (and moved to its device). Missing and
    unexpected keys are errors when ``strict``; a wrong shape is always one.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"load_state_dict: expected a dict of arrays, got {type(state_dict).__name__}"
        )
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    problems, values = [], {}
    for key, target in own.items():
        if key not in state_dict:
            continue
        try:
            value = to_numpy(state_dict[key])
        except Exception as exc:  # noqa: BLE001 - reported with its key below
            problems.append(f"  {key}: cannot convert {type(state_dict[key]).__name__} ({exc})")
            continue
        if value.dtype.kind not in "biuf":
            problems.append(f"  {key}: expected a numeric array, got dtype {value.dtype}")
        elif tuple(value.shape) != tuple(target.shape):
            problems.append(
                f"  {key}: shape mismatch, model has {tuple(target.shape)}, "
                f"state_dict has {tuple(value.shape)}"
            )
        else:
            values[key] = value
    if strict:
        problems += [f"  {k}: missing from state_dict" for k in missing]
        problems += [f"  {k}: unexpected key (not in the model)" for k in unexpected]
    if problems:
        raise StateDictError(
            f"load_state_dict: {owner} cannot load this state_dict "
            f"({len(problems)} problem(s); nothing was copied):\n" + "\n".join(problems)
        )
    for key, value in values.items():
        target = own[key]
        xp = get_array_module(target.data)
        target.data[...] = xp.asarray(value).astype(target.data.dtype, copy=False)
    return IncompatibleKeys(missing, unexpected)
