"""Kernel sets are objects with one interface: ReferenceKernels defines it, the faster sets
override parts of it with the same parameters.

Checked without running a kernel: every name of ``SIMPLE_KERNELS`` and ``FUSED_KERNELS`` is
defined on :class:`ReferenceKernels` itself; every method that :class:`NumbaKernels` or
:class:`CupyKernels` overrides takes the very parameters, by name and in order, of the one it
overrides. The CuPy set is read from its source (``ast``), so this runs where CuPy is not
installed.
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import tinymbv2
from tinymbv2.kernels import FUSED_KERNELS, SIMPLE_KERNELS, kernel_set
from tinymbv2.kernels.numba import NumbaKernels
from tinymbv2.kernels.reference import ReferenceKernels

CUPY_DIR = Path(tinymbv2.__file__).parent / "kernels" / "cupy"


def parameters(method) -> list[str]:
    """The parameter names of a kernel as its callers see it (bound: no ``self``)."""
    return list(inspect.signature(method).parameters)


REFERENCE = ReferenceKernels()


def test_the_reference_set_defines_every_kernel():
    assert len(set(SIMPLE_KERNELS + FUSED_KERNELS)) == len(SIMPLE_KERNELS) + len(FUSED_KERNELS)
    for name in SIMPLE_KERNELS + FUSED_KERNELS:
        assert name in vars(ReferenceKernels), f"{name} is not defined on ReferenceKernels"
        assert callable(getattr(REFERENCE, name)), name
    for name in SIMPLE_KERNELS:  # simple kernels call no other kernel: static methods
        assert isinstance(vars(ReferenceKernels)[name], staticmethod), name


def test_kernel_set_names_its_sets():
    assert isinstance(kernel_set("reference"), ReferenceKernels)
    assert type(kernel_set("numba")) is NumbaKernels and kernel_set("numba") is kernel_set("numba")
    with pytest.raises(ValueError, match="kernel_set: expected 'reference', 'numba' or 'cupy'"):
        kernel_set("fast")


def test_numba_overrides_take_the_reference_parameters():
    numba = kernel_set("numba")
    overrides = [name for name in vars(NumbaKernels) if callable(getattr(ReferenceKernels, name, None))]
    assert set(SIMPLE_KERNELS) <= set(overrides)  # every simple kernel is its own
    for name in overrides:
        assert parameters(getattr(numba, name)) == parameters(getattr(REFERENCE, name)), name
    for name in vars(NumbaKernels):  # and it adds no kernel of its own
        if not name.startswith("__") and name != "name":
            assert name in vars(ReferenceKernels), f"NumbaKernels.{name} overrides nothing"


def cupy_overrides() -> dict[str, list[str]]:
    """{kernel: its parameters} for every kernel CupyKernels defines, read from the source:
    ``name = staticmethod(module.function)`` lines, or methods of the class."""
    tree = ast.parse((CUPY_DIR / "__init__.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CupyKernels"]
    assert [b.id for b in cls.bases] == ["ReferenceKernels"]
    found = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = [a.arg for a in node.args.args[1:]]  # without self
        elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
              and getattr(node.value.func, "id", None) == "staticmethod"):
            (target,), (ref,) = node.targets, node.value.args
            module = ast.parse((CUPY_DIR / f"{ref.value.id}.py").read_text())
            (fn,) = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == ref.attr]
            found[target.id] = [a.arg for a in fn.args.args]
    return found


def test_cupy_overrides_take_the_reference_parameters():
    found = cupy_overrides()
    assert set(found) == set(SIMPLE_KERNELS)  # the fused kernels are the inherited compositions
    for name, params in found.items():
        assert params == parameters(getattr(REFERENCE, name)), name
