"""The course's exercises answer back: every starter fails its check, every solution passes it.

An exercise in ``notebooks/src/NN_name.py`` is three cells (docs/organisation.md, "Exercises"):

1. a markdown cell whose heading starts ``### Exercise N.k``;
2. a code cell, the starter: it defines the function the learner writes (its body raises
   ``NotImplementedError``) and ends with the check call, ``check_something(function)``, a name
   imported from ``tinymbv2.exercises``;
3. a markdown cell holding the solution, hidden on the site in ``<details>``, as one fenced
   ``python`` block that redefines the function.

For each exercise the test runs, in one namespace: the chapter's first code cell (its imports,
fast mode), the starter cell, the check call (it must fail: the starter is not an answer), the
solution, and the check call again (it must pass). Each chapter has two to four exercises.
"""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

import tinymbv2.exercises

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))
HEADING = re.compile(r"^###\s+Exercise\s+(\d+)\.(\d+)", re.M)
SOLUTION = re.compile(r"<details><summary>Solution</summary>\s*```python\n(?P<code>.*?)```\s*.*?</details>",
                      re.S)


def _parse_cells(path: Path):
    spec = importlib.util.spec_from_file_location("notebooks_build", ROOT / "notebooks" / "_build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.parse_cells(path.read_text(encoding="utf-8"), path.name)


def exercises(path: Path) -> list[tuple[str, str, str, str]]:
    """[(id "N.k", setup code, starter code, solution code)] of one chapter source."""
    cells = _parse_cells(path)
    setup = next(body for kind, body in cells if kind == "code")
    found = []
    for i, (kind, body) in enumerate(cells):
        heading = HEADING.search(body) if kind == "markdown" else None
        if heading is None:
            continue
        number = f"{heading.group(1)}.{heading.group(2)}"
        starter = cells[i + 1] if i + 1 < len(cells) else ("missing", "")
        solution = cells[i + 2] if i + 2 < len(cells) else ("missing", "")
        assert starter[0] == "code", f"{path.name}: exercise {number} is not followed by a starter code cell"
        match = SOLUTION.search(solution[1]) if solution[0] == "markdown" else None
        assert match, (f"{path.name}: exercise {number}'s starter is not followed by a markdown cell "
                       "with <details><summary>Solution</summary> and one ```python block")
        found.append((number, setup, starter[1], match.group("code")))
    return found


def check_call(starter: str, where: str) -> ast.Expression:
    """The starter's last statement, ``check_...(...)``, as an expression to evaluate."""
    last = ast.parse(starter).body[-1]
    assert (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and isinstance(last.value.func, ast.Name) and last.value.func.id.startswith("check_")), (
        f"{where}: the starter must end with its check call, check_...(your_function)")
    name = last.value.func.id
    assert name in tinymbv2.exercises.__all__, f"{where}: {name} is not in tinymbv2.exercises"
    return ast.Expression(last.value)


CASES = [(path, *ex) for path in SOURCES for ex in exercises(path)]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_each_chapter_has_two_to_four_exercises(path):
    numbers = [number for number, *_ in exercises(path)]
    assert 2 <= len(numbers) <= 4, f"{path.name}: exercises {numbers}"
    chapter = str(int(path.name[:2]))
    assert all(n.split(".")[0] == chapter for n in numbers), f"{path.name}: numbered {numbers}"
    assert len(set(numbers)) == len(numbers), f"{path.name}: repeated numbers {numbers}"


@pytest.mark.parametrize("path, number, setup, starter, solution", CASES,
                         ids=[f"{c[0].stem[:2]}-{c[1]}" for c in CASES])
def test_starter_fails_and_solution_passes(path, number, setup, starter, solution, monkeypatch):
    # a chapter's set-up may choose the kernel set for the rest of its notebook (chapter 19:
    # the reference set): restored after the test, so that later tests run on the default
    monkeypatch.setattr(tinymbv2.backend, "_active_cpu_set", tinymbv2.active_kernel_set())
    monkeypatch.setenv("TINYMBV2_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(ROOT / "notebooks")
    where = f"{path.name} exercise {number}"
    call = compile(check_call(starter, where), where, "eval")
    namespace: dict = {"__name__": "__exercise__"}
    exec(compile(setup, f"{where} (setup)", "exec"), namespace)
    exec(compile(starter, f"{where} (starter)", "exec"), namespace)
    outcome = eval(call, namespace)
    assert isinstance(outcome, tinymbv2.exercises.Outcome), f"{where}: the check returned {outcome!r}"
    assert not outcome.passed and outcome.message.startswith("not yet: "), (
        f"{where}: the starter passes its own check: {outcome.message}")
    exec(compile(solution, f"{where} (solution)", "exec"), namespace)
    outcome = eval(call, namespace)
    assert outcome.passed and outcome.message.startswith("correct"), f"{where}: {outcome.message}"


def test_a_wrong_answer_gets_a_specific_hint():
    from tinymbv2.exercises import exercise, expect_close, expect_equal

    @exercise
    def check_double(answer):
        for n in (1, 2, 3):
            expect_equal(answer(n), 2 * n, f"double({n})")
        expect_close(answer(np.arange(3.0)), np.arange(3.0) * 2, "double(arange(3))")
        return 4

    assert check_double(lambda x: 2 * x).message == "correct (4 cases)"
    assert check_double(lambda x: x + 1).message == "not yet: double(2): you gave 3, expected 4"
    wrong_shape = check_double(lambda x: 2 * x if np.isscalar(x) else np.zeros(2))
    assert wrong_shape.message == "not yet: double(arange(3)): shape (2,), expected (3,)"
    off = check_double(lambda x: 2 * x if np.isscalar(x) else np.array([0.0, 2.0, 5.0]))
    assert off.message == ("not yet: double(arange(3)) at index (2,): you have 5, expected 4 "
                           "(largest error 1, 1 of 3 values off)")

    def stub(x):
        raise NotImplementedError
    assert "still raises NotImplementedError" in check_double(stub).message
    assert check_double(lambda x: x / 0).message == "not yet: your code raised ZeroDivisionError: division by zero"
    assert not check_double(stub) and bool(check_double(lambda x: 2 * x))
