"""``Module`` and ``Parameter``: the containers that hold a network's state.

A Module owns three ordered registries, filled by plain attribute assignment
(``self.weight = Parameter(...)``, ``self.conv = Conv2d(...)``) as in PyTorch:

* ``_parameters``: [Parameter][tinymbv2.nn.module.Parameter] tensors that the optimizer updates;
* ``_buffers``: state that is not trained but belongs to the model, e.g.
  BatchNorm's running statistics (Tensors with ``requires_grad=False``);
* ``_modules``: child modules, which makes the model a tree. Every recursive
  method (``parameters()``, ``train()``, ``state_dict()``, ...) walks it.

All array access goes through ``tensor.data`` so that ``to(device)`` can swap
a NumPy array for a CuPy one without the layers noticing.

``state_dict()`` is the flat dict ``{"features.0.0.weight": array, ...}`` whose keys
are the dotted paths through the tree; the models choose their attribute names
so the keys equal torchvision's (see [tinymbv2.models.mobilenetv2][]).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..backend import get_array_module, to_device
from .state import IncompatibleKeys, StateDictError, load_state  # noqa: F401


class Parameter(Tensor):
    """A Tensor the optimizer trains: ``requires_grad=True`` unless said otherwise.

    ``Parameter(data)`` shares the array of a Tensor or an ndarray (no copy);
    numbers and lists become float32, arrays keep their dtype.

    Args:
        data: The values: a Tensor (its array is shared), an array, a number or a list.
        requires_grad: Whether the optimizer trains it (False freezes it).
    """

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data)
        self.requires_grad_(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def _as_buffer(value, name: str, owner: str):
    if value is None or isinstance(value, Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)) or hasattr(value, "__cuda_array_interface__"):
        return Tensor(value)
    raise TypeError(
        f"{owner}: buffer {name!r} must be a Tensor, an array or None, got {type(value).__name__}"
    )


def _move(array, device: str):
    """The device hook: return ``array`` on ``device`` ("cpu" or "cuda")."""
    return to_device(array, device, "Module.to")


class Module:
    """Base class of every layer and model; subclasses define ``forward``."""

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these dicts to exist
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        """The computation of the module; every subclass defines it.

        ``module(x)`` calls ``forward(x)``.

        Args:
            *args: The inputs, usually one Tensor.
            **kwargs: Options of the subclass's forward, if it takes any.

        Returns:
            The output, usually one Tensor.

        Raises:
            NotImplementedError: The subclass does not define ``forward``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- registration ---------------------------------------------------------
    def __setattr__(self, name, value):
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(
                f"{type(self).__name__}: cannot assign {name!r} before Module.__init__() is called"
            )
        params, buffers, modules = d["_parameters"], d["_buffers"], d["_modules"]
        if isinstance(value, Parameter):
            if name not in params:  # a replacement keeps its place (state_dict order)
                self._forget(name)
            params[name] = value
        elif isinstance(value, Module):
            if name not in modules:
                self._forget(name)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"{type(self).__name__}: cannot assign {type(value).__name__} to parameter "
                    f"{name!r} (a Parameter or None is expected)"
                )
            params[name] = None
        elif name in buffers:
            buffers[name] = _as_buffer(value, name, type(self).__name__)
        elif name in modules:
            if value is not None:
                raise TypeError(
                    f"{type(self).__name__}: cannot assign {type(value).__name__} to child "
                    f"module {name!r} (a Module or None is expected)"
                )
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            self.__dict__[registry].pop(name, None)
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        # only called when normal lookup fails; reads __dict__ directly so that
        # copy/pickle (which probe attributes before __init__ ran) do not recurse
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__[registry]:
                del self.__dict__[registry][name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param) -> None:
        """Add ``param`` (a Parameter or None) as ``self.<name>``.

        Args:
            name: The attribute name, non-empty and without ``.``.
            param: A [Parameter][tinymbv2.nn.module.Parameter], or None for an absent one
                (a bias-free layer's ``bias``).

        Raises:
            TypeError: ``param`` is neither a Parameter nor None.
            ValueError: ``name`` is empty or has a ``.``.
        """
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"register_parameter: expected a Parameter or None for {name!r}, "
                f"got {type(param).__name__}"
            )
        self._check_name(name, "register_parameter")
        if name not in self._parameters:
            self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Add non-trained state (an array or Tensor, or None) as ``self.<name>``.

        Args:
            name: The attribute name, non-empty and without ``.``.
            tensor: An array or a Tensor (BatchNorm's running statistics), or None.
            persistent: Whether ``state_dict()`` saves it.

        Raises:
            TypeError: ``tensor`` is not a Tensor, an array or None.
            ValueError: ``name`` is empty or has a ``.``.
        """
        self._check_name(name, "register_buffer")
        if name not in self._buffers:
            self._forget(name)
        self._non_persistent.discard(name)
        self._buffers[name] = _as_buffer(tensor, name, type(self).__name__)
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module) -> None:
        """Add a child module (or None) as ``self.<name>``.

        Args:
            name: The attribute name, non-empty and without ``.``.
            module: The child [Module][tinymbv2.nn.module.Module], or None.

        Raises:
            TypeError: ``module`` is not a Module.
            ValueError: ``name`` is empty or has a ``.``.
        """
        if module is not None and not isinstance(module, Module):
            raise TypeError(
                f"add_module: expected a Module for {name!r}, got {type(module).__name__}"
            )
        self._check_name(name, "add_module")
        if name not in self._modules:
            self._forget(name)
        self._modules[name] = module

    @staticmethod
    def _check_name(name, fn):
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{fn}: expected a non-empty name without '.', got {name!r}")

    # -- walking the tree -----------------------------------------------------
    def named_modules(self, prefix: str = "", _memo=None):
        """(dotted name, module) for self (name ``""``) and every descendant, each once.

        Args:
            prefix: Put before every name (the dotted path of this module in a larger tree).

        Yields:
            ``(name, module)`` pairs, depth first, in registration order.
        """
        memo = set() if _memo is None else _memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def shallow_copy(self, cls=None) -> "Module":
        """A new module sharing all the state of this one, in registries of its own.

        The copy has the same attributes and the very same Parameter, buffer and child
        objects; replacing a child or a parameter of the copy leaves this module as it was.
        ([tinymbv2.fusion.fuse][] builds its views so.)

        Args:
            cls: The class of the copy; None: this module's class.

        Returns:
            The copy.
        """
        copy = object.__new__(cls or type(self))
        copy.__dict__.update(self.__dict__)
        for registry in ("_parameters", "_buffers", "_modules"):
            copy.__dict__[registry] = dict(self.__dict__[registry])
        copy.__dict__["_non_persistent"] = set(self._non_persistent)
        return copy

    def named_children(self):
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self):
        for _, child in self.named_children():
            yield child

    def _named_members(self, registry: str, recurse: bool):
        seen = set()  # a shared Parameter is listed once (ids: Tensor.__eq__ is elementwise)
        modules = self.named_modules() if recurse else [("", self)]
        for mod_name, module in modules:
            for name, t in module.__dict__[registry].items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                yield (f"{mod_name}.{name}" if mod_name else name), t

    def named_parameters(self, recurse: bool = True):
        """(dotted name, parameter) of every parameter, each shared one once.

        Args:
            recurse: Include the descendants' parameters (False: this module's own).

        Yields:
            ``(name, Parameter)`` pairs, in ``state_dict`` order.
        """
        return self._named_members("_parameters", recurse)

    def parameters(self, recurse: bool = True):
        """Every parameter, each shared one once (what an optimizer is given).

        Args:
            recurse: Include the descendants' parameters (False: this module's own).

        Yields:
            The [Parameter][tinymbv2.nn.module.Parameter] objects.
        """
        for _, p in self.named_parameters(recurse):
            yield p

    def named_buffers(self, recurse: bool = True):
        """(dotted name, buffer) of every buffer, each shared one once.

        Args:
            recurse: Include the descendants' buffers (False: this module's own).

        Yields:
            ``(name, Tensor)`` pairs.
        """
        return self._named_members("_buffers", recurse)

    def buffers(self, recurse: bool = True):
        """Every buffer (non-persistent ones too), each shared one once.

        Args:
            recurse: Include the descendants' buffers (False: this module's own).

        Yields:
            The buffer Tensors.
        """
        for _, b in self.named_buffers(recurse):
            yield b

    def apply(self, fn):
        """Call ``fn(module)`` on every child (recursively), then on self.

        Args:
            fn: A function of one module, e.g. an initialiser.

        Returns:
            This module.
        """
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -- modes and gradients -------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode (BatchNorm uses batch statistics, Dropout drops), for the whole tree.

        Args:
            mode: True for training mode, False for evaluation mode.

        Returns:
            This module.

        Raises:
            TypeError: ``mode`` is not a bool.
        """
        if not isinstance(mode, bool):
            raise TypeError(f"train: expected mode to be a bool, got {type(mode).__name__}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        """Freeze (False) or unfreeze every parameter, e.g. a backbone when fine-tuning.

        Args:
            requires_grad: Whether the parameters are trained.

        Returns:
            This module.
        """
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter.

        Args:
            set_to_none: Set them to None, like PyTorch's default (else to zero arrays).
        """
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = get_array_module(p.grad).zeros_like(p.grad)

    # -- dtype and device ----------------------------------------------------
    def to(self, *args, **kwargs):
        """Cast and/or move the parameters and buffers, in place.

        Called as ``to(dtype)``, ``to(device)`` or ``to(device, dtype)``. A dtype casts the
        floating parameters and buffers (and gradients); integer buffers such as
        ``num_batches_tracked`` keep theirs. Parameters stay the same objects (only ``.data``
        changes), so an optimizer holding them still works.

        Args:
            *args: A device (``"cpu"``, ``"cuda"``, ``"cuda:0"``) and/or a floating dtype.
            **kwargs: ``device=`` and ``dtype=``, the same by name.

        Returns:
            This module.

        Raises:
            TypeError: An argument is neither a device nor a floating dtype, or an unknown
                keyword is given.
        """
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"to: unexpected keyword arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, str) and (a in ("cpu", "cuda") or a.startswith("cuda:")):
                device = a
            else:
                try:
                    dtype = np.dtype(a)
                except TypeError:
                    raise TypeError(f"to: expected a device ('cpu', 'cuda') or a dtype, got {a!r}")
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype.kind != "f":
                raise TypeError(f"to: expected a floating dtype, got {dtype}")
        if device is not None:
            if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
                raise TypeError(f"to: expected device 'cpu' or 'cuda', got {device!r}")
            device = "cuda" if device.startswith("cuda") else device
        for t in list(self.parameters()) + list(self.buffers()):
            for attr in ("data", "grad"):
                arr = getattr(t, attr)
                if arr is None:
                    continue
                if device is not None:
                    arr = _move(arr, device)
                if dtype is not None and arr.dtype.kind == "f":
                    arr = arr.astype(dtype, copy=False)
                setattr(t, attr, arr)
        return self

    def double(self):
        """Cast floating parameters and buffers to float64 (gradient checks use it)."""
        return self.to(np.float64)

    def float(self):
        """Cast floating parameters and buffers to float32, the default."""
        return self.to(np.float32)

    # -- state_dict ------------------------------------------------------------
    def _state_items(self):
        """(key, Tensor) for every persistent parameter and buffer, in PyTorch's order:
        each module's own parameters, then its buffers, then its children's."""
        for mod_name, module in self.named_modules():
            pre = f"{mod_name}." if mod_name else ""
            for name, p in module._parameters.items():
                if p is not None:
                    yield pre + name, p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    yield pre + name, b

    def state_dict(self) -> dict:
        """Flat dict {dotted key: NumPy array copy} of parameters and buffers."""
        return {k: np.array(t.numpy(), copy=True) for k, t in self._state_items()}

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy the values of ``state_dict`` into the parameters and buffers, in place.

        Everything is checked before anything is copied, so a failed load leaves the
        model unchanged. Values may be NumPy arrays, Tensors or torch tensors; they are
        cast to the model's dtypes.

        Args:
            state_dict: ``{dotted key: value}``, as ``state_dict()`` writes it.
            strict: Whether missing and unexpected keys are errors (False: tolerated, and
                listed in the result).

        Returns:
            The missing and unexpected keys.

        Raises:
            StateDictError: Listing every missing key, unexpected key (when ``strict``) and
                wrong shape ([StateDictError][tinymbv2.nn.state.StateDictError]).
        """
        return load_state(dict(self._state_items()), state_dict, strict, type(self).__name__)

    # -- printing ----------------------------------------------------------------
    def extra_repr(self) -> str:
        """The arguments shown inside ``Name(...)``; layers override it."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        lines = [f"({name}): {_indent(repr(m), 2)}" for name, m in self._modules.items()]
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"


def _indent(text: str, spaces: int) -> str:
    first, *rest = text.split("\n")
    return "\n".join([first] + [" " * spaces + line for line in rest])
