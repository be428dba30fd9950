"""Loading a ``state_dict``: validate every entry first, then copy in place.

A checkpoint that does not fit (a missing key, an unexpected key, a wrong shape)
is reported in one [StateDictError][tinymbv2.nn.state.StateDictError], and the model is
left exactly as it was: nothing is copied until everything checks. Its message is one
line, the counts and the first few keys (a MobileNetV2 of another width differs in the
shape of some 250 of its 314 entries); the full lists are attributes of the error.
"""
from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping

import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module


class StateDictError(ValueError):
    """``load_state_dict`` found missing/unexpected keys or wrong shapes.

    ``str(error)`` is one line: how many keys are missing, unexpected or of the wrong
    shape, and the first few problems. Everything is kept on the error for Python users:

    * ``problems``: every problem, one string each (``"key: what is wrong"``);
    * ``missing``, ``unexpected``: the keys (lists of str);
    * ``mismatched``: ``{key: (shape in the model, shape in the state_dict)}``;
    * ``details``: the whole report, one problem per line.

    Args:
        message: The one-line message.
        problems: Every problem, ``"key: what is wrong"``.
        missing: The keys the state_dict lacks.
        unexpected: The keys the model lacks.
        mismatched: ``{key: (shape in the model, shape in the state_dict)}``.
    """

    SHOWN = 4  # problems named in the one-line message

    def __init__(self, message: str, problems=(), missing=(), unexpected=(), mismatched=None):
        super().__init__(message)
        self.problems, self.missing = list(problems), list(missing)
        self.unexpected, self.mismatched = list(unexpected), dict(mismatched or {})

    @classmethod
    def from_problems(cls, owner: str, problems, missing, unexpected, mismatched):
        """The error of a failed load into ``owner``, its message summarised in one line.

        Args:
            owner: The model's class name, for the message.
            problems: Every problem, ``"key: what is wrong"``.
            missing: The missing keys counted as errors.
            unexpected: The unexpected keys counted as errors.
            mismatched: ``{key: (shape in the model, shape in the state_dict)}``.

        Returns:
            The error, its message naming the counts and the first few problems.
        """
        counts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected",
                  f"{len(mismatched)} of another shape"]
        other = len(problems) - len(missing) - len(unexpected) - len(mismatched)
        if other:
            counts.append(f"{other} not numeric")
        shown = "; ".join(problems[:cls.SHOWN])
        more = len(problems) - cls.SHOWN
        if more > 0:
            shown += f"; and {more} more (all in the error's .problems)"
        message = (f"load_state_dict: {owner} cannot load this state_dict ({len(problems)} "
                   f"problem(s): {', '.join(counts)}; nothing was copied): {shown}")
        return cls(message, problems, missing, unexpected, mismatched)

    @property
    def details(self) -> str:
        """Every problem, one per line (the message names only the first few)."""
        return "\n".join(self.problems)

    def where(self, place) -> "StateDictError":
        """The same error, its message starting with ``place`` (a checkpoint file, say)."""
        return type(self)(f"{place}: {self}", self.problems, self.missing, self.unexpected,
                          self.mismatched)


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def to_numpy(value) -> np.ndarray:
    """``value`` (a Tensor, ndarray, CuPy array or torch tensor) as a host NumPy array."""
    if isinstance(value, Tensor):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return value.detach().cpu().numpy()
    if hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):  # CuPy
        return value.get()
    return np.asarray(value)


def load_state(own: dict, state_dict, strict: bool, owner: str) -> IncompatibleKeys:
    """Copy ``state_dict`` values into the Tensors of ``own``, in place, after checking them all.

    Values are cast to each target's dtype (and moved to its device). Missing and
    unexpected keys are errors when ``strict``; a wrong shape is always one.

    Args:
        own: ``{key: Tensor}``, the model's persistent parameters and buffers.
        state_dict: ``{key: value}``; values are arrays, Tensors or torch tensors.
        strict: Whether missing and unexpected keys are errors.
        owner: The model's class name, for the messages.

    Returns:
        ``IncompatibleKeys(missing_keys, unexpected_keys)``.

    Raises:
        TypeError: ``state_dict`` is not a mapping.
        StateDictError: A key is missing or unexpected (when ``strict``), or a value has
            another shape or is not numeric; nothing was copied.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"load_state_dict: expected a dict of arrays, got {type(state_dict).__name__}"
        )
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    problems, values, mismatched = [], {}, {}
    for key, target in own.items():
        if key not in state_dict:
            continue
        try:
            value = to_numpy(state_dict[key])
        except Exception as exc:  # noqa: BLE001 - reported with its key below
            problems.append(f"{key}: cannot convert {type(state_dict[key]).__name__} ({exc})")
            continue
        if value.dtype.kind not in "biuf":
            problems.append(f"{key}: expected a numeric array, got dtype {value.dtype}")
        elif tuple(value.shape) != tuple(target.shape):
            mismatched[key] = (tuple(target.shape), tuple(value.shape))
            problems.append(f"{key}: shape mismatch, model has {tuple(target.shape)}, "
                            f"state_dict has {tuple(value.shape)}")
        else:
            values[key] = value
    # not strict: missing and unexpected keys are tolerated, and returned below
    bad_missing, bad_unexpected = (missing, unexpected) if strict else ([], [])
    problems += [f"{k}: missing from state_dict" for k in bad_missing]
    problems += [f"{k}: unexpected key (not in the model)" for k in bad_unexpected]
    if problems:
        raise StateDictError.from_problems(owner, problems, bad_missing, bad_unexpected,
                                           mismatched)
    for key, value in values.items():
        target = own[key]
        xp = get_array_module(target.data)
        target.data[...] = xp.asarray(value).astype(target.data.dtype, copy=False)
    return IncompatibleKeys(missing, unexpected)
