"""``Sequential``: modules applied one after another, named '0', '1', ...; ``ModuleList``: the same, unchained."""
from __future__ import annotations

from collections import OrderedDict

from .module import Module


class Sequential(Module):
    """Modules applied one after another: ``forward(x) = m_last(...m1(m0(x)))``.

    Indexable (negative indices; slices give a Sequential keeping the names), ``len``,
    iteration and ``append``.

    Args:
        *modules: The modules in order, named ``"0"``, ``"1"``, ...; or one
            ``OrderedDict(name=module, ...)`` that names them.

    Raises:
        TypeError: An argument is not a Module.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                if not isinstance(m, Module):
                    raise TypeError(
                        f"Sequential: argument {i} is a {type(m).__name__}, not a Module"
                    )
                self.add_module(str(i), m)

    def _index(self, idx: int) -> str:
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"Sequential: index {idx} is out of range for {n} modules")
        return list(self._modules)[idx % n]

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        if not isinstance(idx, int):
            raise TypeError(f"Sequential: indices must be ints or slices, got {type(idx).__name__}")
        return self._modules[self._index(idx)]

    def __setitem__(self, idx, module):
        setattr(self, self._index(idx), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> "Sequential":
        """Add ``module`` at the end, named by its index; returns self."""
        self.add_module(str(len(self._modules)), module)
        return self

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(Sequential):
    """Modules held in a list, named '0', '1', ... and called by their owner one by one.

    A [Sequential][tinymbv2.nn.container.Sequential] without the chaining: the owner's
    ``forward`` decides what each module gets (the detector's heads run module ``k`` on
    feature map ``k``). Indexing, ``len``, iteration and ``append`` as Sequential's.

    Args:
        *modules: The modules in order.

    Raises:
        TypeError: An argument is not a Module.
    """

    def forward(self, x):
        raise TypeError("ModuleList has no forward: call its modules, e.g. module_list[k](x)")
