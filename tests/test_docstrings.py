"""One docstring style across tinymbv2: Google style, which the API pages render as tables.

A docstring is a summary line, prose with the shapes and the maths, then ``Args:``,
``Returns:`` and ``Raises:`` sections with one entry per item. mkdocstrings reads the
sections into parameter tables; the prose is Markdown, with cross-references written
``[Conv2d][tinymbv2.nn.layers.Conv2d]`` (mkdocs-autorefs, resolved or failed by
``mkdocs build --strict``), maths in ``$...$`` and code in backticks.

Checked on every module of the package, read with ``ast`` (nothing is imported):

* no Sphinx role (``:func:``, ``:class:``, ``:meth:``, ...) in any docstring: on a page
  it would show as raw text;
* no ``*`` between two non-blank characters outside code and maths: ``32*0.35`` renders
  as an italic "320.35";
* every public function and method with parameters has an ``Args:`` section (after a
  blank line, as the Google parser needs) whose entries are exactly its parameters, in
  the signature's order.

Exempt from the ``Args:`` rule, and why:

* private names (a leading underscore), members of private classes, and functions
  defined inside functions: they are not API and the pages filter them out;
* ``self`` and ``cls``, the object itself, and parameters with a leading underscore
  (a recursion's memo): they are no caller's business;
* ``__init__`` and the other dunder methods: a class documents its constructor's
  parameters in its own docstring (``merge_init_into_class`` shows them with the class),
  so that docstring is checked instead; the other dunders implement Python's protocols;
* a method that overrides a method of a base class defined in tinymbv2 (a layer's
  ``forward``, a Function's ``forward``/``backward``, a kernel set's kernels, a
  schedule's ``load_state_dict``): the base method's ``Args:`` are the contract, checked
  there;
* a function of one parameter whose docstring is a single line naming that parameter in
  backticks (``init.ones_(tensor)``, whose line is "Fill ``tensor`` with ones, in place;
  returns it."): that line already is the whole table.

The docstrings are also parsed the way the site parses them (griffe's Google parser with
its warnings on), when griffe is installed: a malformed section fails here, not on a page.
"""
from __future__ import annotations

import ast
import inspect
import logging
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tinymbv2"
MODULES = sorted(PACKAGE.rglob("*.py"))

SPHINX_ROLE = re.compile(r":(func|class|meth|mod|attr|data|obj|exc|py:\w+):`")
ARG_ENTRY = re.compile(r"^(\*{0,2}\w+)(?: \([^)]*\))?:(?:\s|$)")
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def trees() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in MODULES]


def attribute_docstrings(node):
    """The strings right after an assignment in a module or class body: the pages show them
    as the attribute's documentation."""
    body = getattr(node, "body", [])
    for before, stmt in zip(body, body[1:]):
        if (isinstance(before, (ast.Assign, ast.AnnAssign)) and isinstance(stmt, ast.Expr)
                and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
            yield stmt.lineno, inspect.cleandoc(stmt.value.value)


def all_docstrings():
    """(where, docstring) for the module, every class and function (private ones too) and
    every documented attribute."""
    for path, tree in trees():
        for node in ast.walk(tree):
            if isinstance(node, DOCUMENTED):
                doc = ast.get_docstring(node)
                if doc:
                    where = rel(path) + ("" if isinstance(node, ast.Module) else f":{node.lineno}")
                    yield where, doc
            if isinstance(node, (ast.Module, ast.ClassDef)):
                for line, doc in attribute_docstrings(node):
                    yield f"{rel(path)}:{line}", doc


def parameters(fn: ast.FunctionDef) -> list[str]:
    """The names a docstring documents: ``self``, ``cls`` and ``_private`` ones dropped,
    ``*args`` and ``**kwargs`` starred."""
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args]
    if a.vararg:
        names.append("*" + a.vararg.arg)
    names += [p.arg for p in a.kwonlyargs]
    if a.kwarg:
        names.append("**" + a.kwarg.arg)
    return [n for n in names if n not in ("self", "cls") and not n.lstrip("*").startswith("_")]


def args_entries(doc: str) -> list[str] | None:
    """The names listed in the ``Args:`` section of a docstring, None if it has none.

    An entry is a line at the section's first indentation, ``name: text`` or
    ``name (type): text``; more indented lines continue it.
    """
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        after_blank = i == 0 or not lines[i - 1].strip()
        if line.rstrip() in ("Args:", "Arguments:", "Parameters:") and after_blank:
            break
    else:
        return None
    entries, indent = [], None
    for line in lines[i + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            break
        if indent is None:
            indent = depth
        if depth == indent:
            match = ARG_ENTRY.match(line.strip())
            entries.append(match.group(1) if match else f"<not an entry: {line.strip()!r}>")
        elif depth < indent:
            break
    return entries


def class_index(modules) -> dict[str, list[ast.ClassDef]]:
    index: dict[str, list[ast.ClassDef]] = {}
    for _, tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                index.setdefault(node.name, []).append(node)
    return index


def inherited_names(cls: ast.ClassDef, index, seen=()) -> set[str]:
    """Method names that ``cls``'s bases defined in tinymbv2 define (by class name)."""
    names: set[str] = set()
    for base in cls.bases:
        base_name = getattr(base, "id", None) or getattr(base, "attr", None)
        for node in index.get(base_name, []):
            if node.name in seen:
                continue
            names |= {m.name for m in node.body if isinstance(m, FUNCTIONS)}
            names |= inherited_names(node, index, seen + (cls.name,))
    return names


def documented_callables():
    """(where, signature parameters, docstring) of everything that needs ``Args:``."""
    modules = trees()
    index = class_index(modules)

    def visit(body, path, cls=None):
        for node in body:
            if not isinstance(node, (*FUNCTIONS, ast.ClassDef)) or node.name.startswith("_"):
                continue
            if isinstance(node, ast.ClassDef):
                init = next((m for m in node.body
                             if isinstance(m, FUNCTIONS) and m.name == "__init__"), None)
                if init is not None and parameters(init):
                    doc = ast.get_docstring(node) or ""
                    yield f"{rel(path)}:{node.lineno} class {node.name}", parameters(init), doc
                yield from visit(node.body, path, node)
            elif isinstance(node, FUNCTIONS):
                names = parameters(node)
                if not names:
                    continue
                if cls is not None and node.name in inherited_names(cls, index):
                    continue
                doc = ast.get_docstring(node) or ""
                if (len(names) == 1 and doc and "\n" not in doc
                        and re.search(rf"`{re.escape(names[0].lstrip('*'))}`", doc)):
                    continue
                owner = f"{cls.name}." if cls is not None else ""
                yield f"{rel(path)}:{node.lineno} {owner}{node.name}", names, doc

    for path, tree in modules:
        yield from visit(tree.body, path)


def test_the_package_is_found():
    assert len(MODULES) > 80
    assert len(list(documented_callables())) > 200


def test_no_sphinx_roles_in_docstrings():
    found = [f"{where}: {m.group(0)}" for where, doc in all_docstrings()
             for m in SPHINX_ROLE.finditer(doc)]
    assert not found, "\n".join(found)


SECTION = re.compile(
    r"(Args|Arguments|Parameters|Returns|Yields|Raises|Attributes|Warns|Other Parameters):")


def prose(doc: str) -> str:
    """A docstring without what Markdown shows verbatim: code blocks, code spans and maths.

    Outside a section, a block indented by 4 after a blank line is code; inside one
    (``Args:``, ``Returns:``, ...) indented lines are its entries, whose names are shown as
    code (``*args``).
    """
    doc = re.sub(r"```.*?```", "", doc, flags=re.S)
    kept, in_code, in_section, previous_blank = [], False, False, True
    for line in doc.splitlines():
        stripped = line.lstrip()
        depth = len(line) - len(stripped)
        if stripped and depth == 0:
            in_section = bool(SECTION.fullmatch(stripped)) and previous_blank
            in_code = False
        elif stripped and in_section:
            line = re.sub(r"^(\s+)\*{1,2}(\w+( \(.*?\))?:)", r"\1\2", line)  # *args: is a name
        elif stripped and previous_blank and depth >= 4:
            in_code = True
        if not in_code:
            kept.append(line)
        previous_blank = not stripped
    text = "\n".join(kept)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    text = re.sub(r"(``?).+?\1", "", text, flags=re.S)
    return re.sub(r"\$[^$\n]+\$", "", text)


EMPHASIS = re.compile(r"(?<![\w*])(\*{1,2})[^\s*](?:[^*]*?[^\s*])?\1(?![\w*])")


def stray_asterisks(line: str) -> bool:
    """Whether a line of prose has a ``*`` that is neither a bullet nor an intended
    ``*emphasis*`` or ``**bold**``."""
    return "*" in EMPHASIS.sub("", line.strip().removeprefix("* "))


def test_no_asterisk_becomes_emphasis():
    found = [f"{where}: {line.strip()}" for where, doc in all_docstrings()
             for line in prose(doc).splitlines() if stray_asterisks(line)]
    assert not found, "put code and expressions with * in backticks:\n" + "\n".join(found)


def test_every_public_callable_lists_its_parameters_under_args():
    missing, wrong = [], []
    for where, names, doc in documented_callables():
        entries = args_entries(doc)
        if entries is None:
            missing.append(f"{where}({', '.join(names)})")
        elif entries != names:
            wrong.append(f"{where}: signature {names}, Args {entries}")
    assert not missing and not wrong, "\n".join(
        [f"{len(missing)} without an Args: section:", *missing,
         f"{len(wrong)} with other entries:", *wrong])


def test_the_readers_above_read_sections_code_and_emphasis_as_the_site_does():
    doc = ("Summary.\n\nArgs:\n    x: the input,\n        (N, C).\n    *rest: more.\n"
           "    k (int): size.\n\nReturns:\n    y.")
    assert args_entries(doc) == ["x", "*rest", "k"]
    assert args_entries("Summary.\nArgs:\n    x: no blank line above, so not a section.") is None
    assert prose("a `32*0.35` b $x*y$ c 32*0.35") == "a  b  c 32*0.35"
    assert stray_asterisks("c 32*0.35") and stray_asterisks("C*H*W") and stray_asterisks("a * b")
    assert not stray_asterisks("* a **bold** claim, *emphasis* and *x*.")
    assert "*" not in prose("Args:\n    *args: inputs.\n    **kwargs: options.")
    assert "*" not in prose("Text:\n\n    y = a * b      (a code block)\n")


def test_the_site_parser_reads_every_docstring_without_a_warning(caplog):
    griffe = pytest.importorskip("griffe")
    package = griffe.load(
        "tinymbv2", search_paths=[str(ROOT)], docstring_parser="google",
        docstring_options={"warn_missing_types": False, "warn_unknown_params": True,
                           "returns_multiple_items": False},
        resolve_aliases=False,
    )
    caplog.set_level(logging.WARNING)

    named = []

    def visit(obj):
        if obj.is_alias:
            return
        if obj.docstring is not None:
            for section in obj.docstring.parsed:  # parsing logs what the parser cannot read
                if section.kind.value in ("returns", "yields"):
                    # one description; a first line "word: ..." would be read as a name
                    named.extend(f"{obj.path}: {item.name!r}"
                                 for item in section.value if item.name)
        for member in obj.members.values():
            visit(member)

    visit(package)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warnings, "\n".join(warnings)
    assert not named, "Returns:/Yields: read as named values:\n" + "\n".join(named)
