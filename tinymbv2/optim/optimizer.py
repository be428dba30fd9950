"""The optimizer base class: parameter groups, per-parameter state, checkpoints.

Same shape as ``torch.optim.Optimizer`` so that what a learner knows carries over:

* ``Optimizer(params, defaults)``: ``params`` is an iterable of tensors (anything
  with an array ``.data`` and a ``.grad`` that is an array or ``None``), or a list of
  dicts ``{'params': [...], 'lr': ..., ...}`` (parameter groups). Options missing from
  a group are filled in from ``defaults``.
* ``step()`` updates every parameter whose ``.grad`` is not ``None``, in place
  (``p.data[...] = ...``), so references to ``p.data`` held elsewhere (a model's
  ``state_dict``, an EMA copy) stay valid.
* ``zero_grad()`` sets the gradients to ``None`` (PyTorch's default since 2.0).
* ``state_dict()`` / ``load_state_dict()``: ``{'state': {index: {name: array or int}},
  'param_groups': [{..options.., 'params': [indices]}]}``: parameters are numbered
  in the order they appear across the groups, exactly like PyTorch, so a checkpoint
  does not depend on object identities. One key more than PyTorch's: ``kind``, the
  optimizer's class name, so that a state is never loaded into another kind (Adam's
  into AdamW: the same options, another update).

Subclasses implement ``_update(p, grad, state, group)`` for one parameter; the loop
over groups and parameters, the ``None`` check and the state bookkeeping live here.
The array module comes from [get_array_module][tinymbv2.backend.get_array_module], so
the same update runs on NumPy and CuPy arrays.
"""
from __future__ import annotations

import copy
import math
from numbers import Real

from ..backend import get_array_module


def check_hyper(owner: str, name: str, value, low=0.0, high=None, high_open=False) -> None:
    """Raise unless ``value`` is a finite real number in the range ``low`` .. ``high``.

    The message names the owner, the option, the range and the value, e.g.
    ``SGD: momentum must be in [0, 1), got 5.0``. Infinity and NaN are refused
    everywhere: no optimizer or schedule option means anything at infinity, and one
    inf learning rate turns every weight into inf or NaN at the first step.

    Args:
        owner: The optimizer's or schedule's name, for the message.
        name: The option's name.
        value: The value checked.
        low: The smallest value allowed (included); None: no bound.
        high: The largest value allowed; None: no bound.
        high_open: Exclude ``high`` itself.

    Raises:
        ValueError: ``value`` is not a finite real number in the range.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    inside = (math.isfinite(value) and (low is None or value >= low)
              and (high is None or (value < high if high_open else value <= high)))
    if not inside:
        raise ValueError(f"{owner}: {name} must be {_describe_range(low, high, high_open)}, "
                         f"got {value}")


def _describe_range(low=None, high=None, high_open=False) -> str:
    """``in [0, 1)``, ``a finite number >= 0``, ...: the range of ``check_hyper`` in words."""
    if low is not None and high is not None:
        return f"in [{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a finite number >= {low:g}"
    if high is not None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return "a finite number"


class Optimizer:
    """Base class of the optimizers (see the module docstring).

    Args:
        params: An iterable of tensors, or of dicts defining parameter groups
            (``{'params': [...], option: value, ...}``).
        defaults: The options of the subclass, filling in what a group leaves out.

    Raises:
        TypeError: ``params`` is a single tensor or not iterable.
        ValueError: ``params`` is empty, or an option is out of its range.
    """

    defining: tuple[str, ...] = ()
    """The options that choose the form of the update (SGD's ``nesterov``, RMSprop's
    ``centered``): a saved state with another value of one in a group is refused by
    [load_state_dict][tinymbv2.optim.optimizer.Optimizer.load_state_dict]. The others (the lr, the momentum, ...) are numbers a schedule
    moves, and are taken from the state."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: dict[int, dict] = {}  # id(param) -> that parameter's state
        self.param_groups: list[dict] = []
        name = type(self).__name__
        if _is_tensor_like(params):
            raise TypeError(
                f"{name}: params must be an iterable of tensors or of dicts, got a single "
                f"{type(params).__name__}; wrap it in a list"
            )
        try:
            groups = list(params)
        except TypeError:
            raise TypeError(
                f"{name}: params must be an iterable of tensors or of dicts, "
                f"got {type(params).__name__}"
            ) from None
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- groups ---------------------------------------------------------------
    def add_param_group(self, group: dict) -> None:
        """Add a group of parameters with options of its own; missing options take the defaults.

        Args:
            group: ``{'params': [...], option: value, ...}``.

        Raises:
            TypeError: ``group`` is not a dict, or its parameters are not tensors.
            ValueError: No 'params' key, a parameter that appears twice, or an option out of its
                range.
        """
        name = type(self).__name__
        if not isinstance(group, dict):
            raise TypeError(f"{name}.add_param_group: expected a dict, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"{name}.add_param_group: the group dict has no 'params' key")
        params = group["params"]
        params = [params] if _is_tensor_like(params) else list(params)
        for i, p in enumerate(params):
            if not _is_tensor_like(p):
                raise TypeError(
                    f"{name}: parameter {i} of a group must have an array .data and a .grad "
                    f"attribute (a Tensor/Parameter), got {type(p).__name__}"
                )
            if getattr(p.data.dtype, "kind", "f") != "f":
                raise TypeError(
                    f"{name}: can only optimize floating parameters, parameter {i} has "
                    f"dtype {p.data.dtype}"
                )
        unknown = set(group) - set(self.defaults) - _SCHEDULER_KEYS
        if unknown:
            raise ValueError(
                f"{name}.add_param_group: unknown option(s) {sorted(unknown)}; "
                f"known: {sorted(self.defaults)}"
            )
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError(f"{name}: a parameter appears more than once in the parameter groups")
        new = dict(self.defaults)
        new.update(group)
        new["params"] = params
        self._check_group(new)
        self.param_groups.append(new)

    def _check_group(self, group: dict) -> None:
        """Validate a group's options; subclasses raise ValueError on bad values."""

    # -- the update ------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: ``p.grad = None`` (or fill them with zeros).

        Args:
            set_to_none: Set them to None (else zero them in place).
        """
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self, closure=None):
        """Update every parameter that has a gradient, in place.

        Args:
            closure: A function that recomputes and returns the loss; called first if given.

        Returns:
            What ``closure()`` returned, or None.

        Raises:
            ValueError: A gradient's shape is not its parameter's.
        """
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data if _is_tensor_like(p.grad) else p.grad
                if grad.shape != p.data.shape:
                    raise ValueError(
                        f"{type(self).__name__}.step: gradient shape {grad.shape} does not "
                        f"match parameter shape {p.data.shape}"
                    )
                state = self.state.setdefault(id(p), {})
                self._update(p, grad, state, group, get_array_module(p.data))
        return loss

    def _update(self, p, grad, state: dict, group: dict, xp) -> None:
        raise NotImplementedError

    # -- checkpoints -----------------------------------------------------------
    def state_dict(self) -> dict:
        """``{'kind': class name, 'state': {index: {...}}, 'param_groups': [...]}``,
        arrays copied.

        PyTorch returns references to the live buffers; copies are returned here so
        that a saved dict is a snapshot even if the optimizer keeps stepping.
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {index[pid]: {k: _copy_value(v) for k, v in s.items()}
                 for pid, s in self.state.items() if pid in index}
        return {"kind": type(self).__name__, "state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the options and the state a ``state_dict()`` saved, arrays copied in.

        The dict is [state_dict][tinymbv2.optim.optimizer.Optimizer.state_dict]'s. Refused,
        with one line and nothing changed: the state of another kind of optimizer (its
        ``kind``; or, saved before states recorded their kind, a group holding an option this
        one does not have: SGD's ``dampening`` in Adam), and a group saved with another value
        of a [defining][tinymbv2.optim.optimizer.Optimizer.defining] option. An option a saved
        group lacks (it was saved before the option existed) takes this optimizer's value for
        that group (its default); the other options are the saved ones, as PyTorch loads them.

        Args:
            state_dict: ``{'kind': ..., 'state': {...}, 'param_groups': [...]}``.

        Raises:
            ValueError: The state does not fit this optimizer (see above), or the groups hold
                other numbers of parameters or state of other shapes.
        """
        name = type(self).__name__
        if (not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict)
                or not set(state_dict) <= {"kind", "state", "param_groups"}):
            raise ValueError(
                f"{name}.load_state_dict: expected a dict with keys 'state' and "
                f"'param_groups' (and 'kind'), got {type(state_dict).__name__}"
                + (f" with keys {sorted(state_dict)}" if isinstance(state_dict, dict) else "")
            )
        kind = state_dict.get("kind")
        if kind is not None and kind != name:
            raise ValueError(f"{name}.load_state_dict: expected a state saved by {name}, got one "
                             f"saved by {kind}")
        saved_groups = state_dict["param_groups"]
        for gi, saved in enumerate(saved_groups):
            if not isinstance(saved, dict) or "params" not in saved:
                raise ValueError(f"{name}.load_state_dict: expected parameter group {gi} to be a "
                                 f"dict with 'params', got {type(saved).__name__}"
                                 + (f" with keys {sorted(saved)}" if isinstance(saved, dict) else ""))
            # another optimizer's state (SGD's into Adam, say) has options this one lacks
            options = set(saved) - _SCHEDULER_KEYS
            unknown = options - set(self.defaults)
            if unknown:
                raise ValueError(
                    f"{name}.load_state_dict: expected {name}'s options in parameter group {gi}, "
                    f"got unknown {sorted(unknown)} (it holds {sorted(options)}); was it saved "
                    "by another optimizer?"
                )
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"{name}.load_state_dict: the checkpoint has {len(saved_groups)} parameter "
                f"groups, this optimizer has {len(self.param_groups)}"
            )
        for gi, (mine, saved) in enumerate(zip(self.param_groups, saved_groups)):
            for key in self.defining:
                if key in saved and saved[key] != mine[key]:
                    raise ValueError(
                        f"{name}.load_state_dict: expected {key}={mine[key]!r} in parameter "
                        f"group {gi} (as this {name} was built), got {key}={saved[key]!r}"
                    )
        by_index = {}
        for gi, (mine, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(mine["params"]) != len(saved["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: group {gi} has {len(saved['params'])} parameters "
                    f"in the checkpoint and {len(mine['params'])} here"
                )
            by_index.update(zip(saved["params"], mine["params"]))
        new_state = {}
        for i, s in state_dict["state"].items():
            p = by_index.get(int(i))
            if p is None:
                raise ValueError(f"{name}.load_state_dict: state for unknown parameter index {i}")
            xp = get_array_module(p.data)
            restored = {}
            for k, v in s.items():
                if hasattr(v, "shape") and v.shape == p.data.shape:
                    restored[k] = xp.array(v, dtype=p.data.dtype)  # a copy, on p's device
                elif hasattr(v, "shape"):
                    raise ValueError(
                        f"{name}.load_state_dict: state '{k}' of parameter {i} has shape "
                        f"{v.shape}, the parameter has {p.data.shape}"
                    )
                else:
                    restored[k] = copy.deepcopy(v)
            new_state[id(p)] = restored
        for mine, saved in zip(self.param_groups, saved_groups):
            params = mine["params"]
            lacking = {k: mine[k] for k in self.defaults if k not in saved}  # saved before k existed
            mine.clear()
            mine.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
            mine.update(lacking)
            mine["params"] = params
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k != "params":
                    lines.append(f"    {k}: {group[k]}")
        return "\n".join(lines + [")"])


# keys that schedulers (and users, to label a group) may add to a group
_SCHEDULER_KEYS = {"params", "name", "initial_lr", "max_lr", "min_lr", "max_momentum",
                   "base_momentum"}


def _is_tensor_like(obj) -> bool:
    return hasattr(obj, "data") and hasattr(obj, "grad") and hasattr(obj.data, "shape")


def _copy_value(v):
    return v.copy() if hasattr(v, "copy") and hasattr(v, "shape") else copy.deepcopy(v)
