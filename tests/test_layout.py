"""How the package is laid out, checked from its source with ``ast`` (docs/organisation.md).

* the import graph has no cycle, counting imports inside functions too;
* a lower layer never imports a higher one (the table of DESIGN.md);
* no module imports another module's private (underscore) name;
* ``models/`` and ``nn/`` hold architecture only: no kernel, fusion or backend-set name;
* every differentiable op names its readable kernel, and the kernels it names exist;
* kernel sets are objects: no kernel looked up by a name built from strings.
"""
from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest

import tinymbv2
from tinymbv2.kernels import FUSED_KERNELS, SIMPLE_KERNELS, kernels_for
from tinymbv2.kernels.reference import ReferenceKernels

PACKAGE = Path(tinymbv2.__file__).resolve().parent
ROOT = PACKAGE.parent

# DESIGN.md's layers: a module may import its own layer and lower ones only.
LAYERS = {
    "tinymbv2.backend": 1, "tinymbv2.random": 1, "tinymbv2.atomic": 1,
    "tinymbv2.kernels": 2,
    "tinymbv2.autograd": 3, "tinymbv2.profiler": 3,
    "tinymbv2.functional": 4, "tinymbv2.gradcheck": 4, "tinymbv2.graph_drawing": 4,
    "tinymbv2.nn": 5,
    "tinymbv2.models": 6, "tinymbv2.fusion": 6,
    "tinymbv2.optim": 7, "tinymbv2.data": 7, "tinymbv2.train": 7, "tinymbv2.evaluation": 7,
    "tinymbv2.detection": 7, "tinymbv2.export": 7, "tinymbv2.quant": 7, "tinymbv2.distributed": 7,
    "tinymbv2.cli": 8, "tinymbv2.__main__": 8, "tinymbv2.exercises": 8,
    "tinymbv2": 9,  # the package's __init__ gathers the public names
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports(name: str):
    """(node, imported module, imported names) for every import in the module, function
    bodies included; relative imports resolved; only modules inside tinymbv2."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    package = name if is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield node, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target not in MODULES:
                continue
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            for sub in submodules:
                yield node, sub, ()
            rest = [n for n in names if f"{target}.{n}" not in MODULES]
            if rest:
                yield node, target, rest


def layer(name: str) -> int:
    while name not in LAYERS:
        name = name.rpartition(".")[0]
    return LAYERS[name]


def test_every_module_has_a_layer():
    assert len(MODULES) > 50
    for name in MODULES:
        layer(name)  # raises KeyError for a top-level module missing from the table


def test_the_import_graph_has_no_cycle():
    graph = {name: sorted({target for _, target, _ in imports(name)} - {name}) for name in MODULES}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name)
    assert graph["tinymbv2.autograd"] == ["tinymbv2.backend"]  # the engine needs only layer 1


def test_no_module_imports_a_higher_layer():
    bad = [f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
           for name in MODULES for _, target, _ in imports(name) if layer(target) > layer(name)]
    assert not bad, "\n".join(bad)


def test_no_private_name_crosses_a_module_boundary():
    bad = [f"{name}: from {target} import {n}" for name in MODULES
           for _, target, names in imports(name) if target != name
           for n in names if n.startswith("_")]
    bad += [f"{name}: imports private module {target}" for name in MODULES
            for _, target, _ in imports(name) if target.rpartition(".")[2].startswith("_")
            and target.rpartition(".")[2] != "__main__"]
    assert not bad, "\n".join(bad)


FUSION_AND_KERNEL_NAMES = re.compile(
    r"numba|cupy|kernels_for|kernel_set|use_kernels|fuse|fused|conv2d_batch_norm_eval|"
    r"inverted_residual_eval|depthwise_stage|batch_norm_relu6|bn_eval")


def code_names(path: Path):
    """Identifiers, attribute names and non-docstring strings of a module's code."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, ast.alias):
            yield node.name
        elif isinstance(node, ast.ImportFrom):
            yield node.module or ""
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in docstrings):
            yield node.value


@pytest.mark.parametrize("folder", ["models", "nn"])
def test_models_and_nn_hold_architecture_only(folder):
    """No kernel, kernel set, backend set or fused op is named in their code."""
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        found = sorted({n for n in code_names(path) if FUSION_AND_KERNEL_NAMES.search(n)})
        assert not found, f"{path.relative_to(ROOT)} names {found}"
        for name in MODULES:
            if MODULES[name] == path:
                targets = {t for _, t, _ in imports(name)}
                assert not any(t.startswith(("tinymbv2.kernels", "tinymbv2.fusion"))
                               for t in targets), f"{name} imports {targets}"


def function_classes():
    """Every differentiable op: the Function subclasses defined in tinymbv2.functional."""
    found = []
    for name, path in MODULES.items():
        if not name.startswith("tinymbv2.functional"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", None) == "Function" for b in node.bases):
                found.append((name, node.name, ast.get_docstring(node) or ""))
    return found


def test_every_differentiable_op_names_its_readable_kernel():
    ops = function_classes()
    assert len(ops) >= 30
    for module, cls, doc in ops:
        assert "readable:" in doc, f"{module}.{cls} does not name its readable version"
        paragraph = doc.split("readable:", 1)[1].split("\n\n")[0]
        if "kernels/reference.py" in paragraph:
            names = [n.removeprefix("ReferenceKernels.")
                     for n in re.findall(r"``([\w.]+)``", paragraph)]
            assert names, f"{module}.{cls}: names no kernel"
            for n in names:
                assert callable(getattr(ReferenceKernels, n, None)), f"{module}.{cls}: {n}?"
        else:
            assert "this class" in paragraph, f"{module}.{cls}: {paragraph!r}"


def test_the_readable_set_defines_every_kernel_and_the_ops_reach_it():
    for name in SIMPLE_KERNELS + FUSED_KERNELS:
        assert name in ReferenceKernels.__dict__, name
    # kernels_for is annotated with the readable class: an editor's go-to-definition of
    # ``kernels_for(x).depthwise_conv2d_forward`` lands in kernels/reference.py
    assert typing.get_type_hints(kernels_for)["return"] is ReferenceKernels


def test_no_kernel_is_looked_up_by_name():
    """Outside kernels/, no getattr on a kernel set (``getattr(k, f"{...}_forward")``,
    ``getattr(k, "optional", None)``): the ops call kernel methods by their names."""
    def on_kernel_set(node):
        return ((isinstance(node, ast.Name) and node.id in ("k", "kernels"))
                or (isinstance(node, ast.Attribute) and node.attr == "kernels")
                or (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "kernels_for"))

    bad = []
    for name, path in MODULES.items():
        if name.startswith("tinymbv2.kernels"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr")
                    and node.args and on_kernel_set(node.args[0])):
                bad.append(f"{name}:{node.lineno}")
    assert not bad, bad
