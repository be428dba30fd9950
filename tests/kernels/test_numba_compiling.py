"""The compile notice: a line on a terminal while the numba kernels compile, nothing else.

Numba announces each compile with a ``numba:compile`` event and none when a function is
loaded from its disk cache; :mod:`tinymbv2.kernels.numba.compiling` listens. Kernels of
the set are functions whose module is under ``tinymbv2.kernels.numba``: the tests make
fresh ones (a module file under a name of the set), so that something really compiles.
"""
from __future__ import annotations

import importlib.util
import io
import time
import types

import numba
import numpy as np
import pytest

from tinymbv2.kernels.numba import compiling

SOURCE = '''
from numba import njit


@njit(cache=CACHE)
def double_plus_one(x):
    return 2 * x + 1
'''


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self):
        return True


def fresh_kernel(tmp_path, name, cache=False):
    """A new function of the numba set (its module is under its package), from a file."""
    path = tmp_path / "probe_module.py"
    path.write_text(SOURCE.replace("CACHE", str(cache)))
    spec = importlib.util.spec_from_file_location(f"{compiling.PACKAGE}.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.double_plus_one


@pytest.fixture
def quick_bursts(monkeypatch):
    monkeypatch.setattr(compiling, "QUIET_SECONDS", 0.05)


def wait_for_line(stream, text, seconds=5.0):
    end = time.monotonic() + seconds
    while text not in stream.getvalue() and time.monotonic() < end:
        time.sleep(0.02)
    return stream.getvalue()


def test_a_compile_on_a_terminal_shows_a_count_then_one_line(tmp_path, monkeypatch, quick_bursts):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    kernel = fresh_kernel(tmp_path, "probe_terminal")
    before = len(compiling.compiled())
    monkeypatch.setattr(compiling, "QUIET_SECONDS", 5.0)  # the two compiles are one burst
    assert kernel(np.arange(3.0)).tolist() == [1.0, 3.0, 5.0]
    assert kernel(np.arange(3, dtype=np.float32)).tolist() == [1.0, 3.0, 5.0]
    monkeypatch.setattr(compiling, "QUIET_SECONDS", 0.05)
    kernel(np.arange(3, dtype=np.int64))  # a third, then the burst ends
    shown = wait_for_line(terminal, "tinymbv2: compiled")
    assert "\rtinymbv2: compiling numba kernels (float64, first run only): 0 done, 0 s; " in shown
    assert "first run only): 1 done, " in shown and "first run only): 2 done, " in shown
    # each line cleared when its compile ended, and one line stays at the end
    assert shown.count("\n") == 1 and shown.endswith("\n")
    last = shown.rsplit("\r", 1)[-1]
    assert last.startswith("tinymbv2: compiled 3 numba kernels for float64, float32 and int64 in ")
    new = compiling.compiled()[before:]
    assert [(c.name, c.dtypes) for c in new] == [("probe_terminal.double_plus_one", ("float64",)),
                                                 ("probe_terminal.double_plus_one", ("float32",)),
                                                 ("probe_terminal.double_plus_one", ("int64",))]

    terminal.truncate(0)
    terminal.seek(0)
    kernel(np.arange(4.0))  # compiled already: nothing to say
    time.sleep(0.2)
    assert terminal.getvalue() == "" and len(compiling.compiled()) == before + 3


def test_no_notice_off_a_terminal_but_the_compile_is_counted(tmp_path, monkeypatch, quick_bursts):
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    kernel = fresh_kernel(tmp_path, "probe_pipe")
    before = len(compiling.compiled())
    kernel(np.arange(3, dtype=np.float32))
    time.sleep(0.2)
    assert pipe.getvalue() == ""
    assert [c.dtypes for c in compiling.compiled()[before:]] == [("float32",)]


def test_a_kernel_loaded_from_the_cache_is_silent(tmp_path, monkeypatch, quick_bursts):
    """Compiled once into an empty cache, then loaded by a fresh dispatcher of the same
    source (as a new process would): no compile, no line."""
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "cache"))
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    fresh_kernel(tmp_path, "probe_cold", cache=True)(np.arange(3.0))
    assert "tinymbv2: compiled 1 numba kernel" in wait_for_line(terminal, "tinymbv2: compiled")
    terminal.truncate(0)
    terminal.seek(0)
    before = len(compiling.compiled())
    warm = fresh_kernel(tmp_path, "probe_warm", cache=True)
    assert warm(np.arange(3.0)).tolist() == [1.0, 3.0, 5.0]
    time.sleep(0.2)
    assert warm.stats.cache_hits and terminal.getvalue() == ""
    assert len(compiling.compiled()) == before


def test_functions_outside_the_set_are_not_counted(monkeypatch, quick_bursts):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    before = len(compiling.compiled())
    numba.njit(lambda x: x + 1)(1.5)
    time.sleep(0.2)
    assert terminal.getvalue() == "" and len(compiling.compiled()) == before


class HeldTimer:
    """A quiet timer that fires only when the test says: ``fire()`` runs its function as
    the timer's thread would, even after ``cancel()`` (a timer that has already fired)."""

    armed: list = []

    def __init__(self, interval, function, args=None, kwargs=None):
        self.function, self.args, self.kwargs = function, args or (), kwargs or {}
        self.daemon = False
        HeldTimer.armed.append(self)

    def start(self):
        pass

    def cancel(self):
        pass  # too late: it has fired, and its function waits for the lock

    def fire(self):
        self.function(*self.args, **self.kwargs)


def compile_event(name, dtype="float32"):
    """A ``numba:compile`` event of a kernel of the set (``name`` in a module under it)."""
    def kernel():
        pass

    kernel.__module__, kernel.__qualname__ = f"{compiling.PACKAGE}.probe_race", name
    arg = types.SimpleNamespace(dtype=dtype, ndim=1)
    return types.SimpleNamespace(data={"dispatcher": types.SimpleNamespace(py_func=kernel),
                                       "args": (arg,)})


def test_a_timer_that_fires_as_a_compile_starts_does_not_end_the_burst(monkeypatch):
    """The race: the quiet timer fires (too late for ``cancel``) just as the next kernel
    starts compiling, and its ``end_burst`` gets the lock after ``on_start``. The burst goes
    on: no summary while that kernel compiles, and one summary at the end counting both."""
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr(compiling.threading, "Timer", HeldTimer)
    monkeypatch.setattr(HeldTimer, "armed", [])
    watch = compiling.CompileWatch()
    first, second = compile_event("first"), compile_event("second")
    watch.on_start(first)
    watch.on_end(first)
    (quiet,) = HeldTimer.armed
    watch.on_start(second)  # cancels the timer, which has fired already
    quiet.fire()  # its end_burst, run after on_start let the lock go
    assert "tinymbv2: compiled" not in terminal.getvalue()
    watch.on_end(second)
    assert "tinymbv2: compiled" not in terminal.getvalue()
    HeldTimer.armed[-1].fire()
    summary = terminal.getvalue().rsplit("\r", 1)[-1]
    assert summary.startswith("tinymbv2: compiled 2 numba kernels for float32 in ")
    assert terminal.getvalue().count("tinymbv2: compiled") == 1
    assert [c.name for c in watch.done] == ["probe_race.first", "probe_race.second"]


@pytest.mark.parametrize("stderr", [Terminal, io.StringIO], ids=["terminal", "pipe"])
def test_without_a_cache_the_first_compile_prints_the_notice_once(monkeypatch, stderr):
    """No writable cache folder: one line says so when the first kernel compiles (none
    when nothing compiles), whatever stderr is; the second compile says nothing more."""
    out = stderr()
    monkeypatch.setattr("sys.stderr", out)
    monkeypatch.setattr(compiling, "CACHE", False)
    monkeypatch.setattr(compiling.threading, "Timer", HeldTimer)
    monkeypatch.setattr(HeldTimer, "armed", [])
    watch = compiling.CompileWatch()
    assert out.getvalue() == ""
    for name in ("first", "second"):
        watch.on_start(compile_event(name))
        watch.on_end(compile_event(name))
    for timer in HeldTimer.armed:
        timer.fire()
    lines = [line for line in out.getvalue().replace("\r", "\n").splitlines() if line.strip()]
    notices = [line for line in lines if line.startswith("tinymbv2: no writable folder")]
    assert len(notices) == 1 and "NUMBA_CACHE_DIR" in notices[0]
    if stderr is io.StringIO:
        assert lines == notices  # off a terminal, the notice is the only line
