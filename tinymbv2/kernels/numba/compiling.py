"""What Numba compiles, while it compiles: the kernels compiled, and a line on the terminal.

A kernel is compiled the first time it is called with a new kind of argument (float32 or
float64 arrays, of each layout it meets), and kept in Numba's disk cache (``cache``).
With a cold cache the first training step of MobileNetV2 compiles a few dozen kernels,
about a minute on 2 cores, which used to pass in silence. Numba announces each compile
(a ``numba:compile`` event around it; none when a kernel is loaded from the cache), so
listening to those events costs nothing on the warm path and says exactly when something
compiles:

* ``compiled`` lists the kernels of this set compiled so far in this process (what
  ``tinymbv2 warmup`` reports);
* where Numba has no folder to cache the kernels in (``cache``), the first kernel to
  compile prints ``cache.no_cache_notice`` on stderr, once per process, terminal or not;
* when stderr is a terminal, each kernel shows one line while it compiles: the kernels
  compiled so far in this burst and the seconds it has taken (cleared when the compile is
  over, so that the program's own output, a print or a progress bar, stays clean); at the
  end of the burst one line stays, saying what was compiled, how long it took and where it
  is kept. Output that is not a terminal (a pipe, a log file, pytest's capture, a
  notebook) gets nothing, so no test or log has to expect it.
"""
from __future__ import annotations

import atexit
import dataclasses
import shutil
import sys
import threading
import time

from numba.core import event

from .cache import CACHE, WHERE, no_cache_notice

PACKAGE = __name__.rpartition(".")[0]
"""The kernel set's package: compiles of functions defined under it are counted."""
QUIET_SECONDS = 1.5
"""A burst of compiles ends when this long passes after a kernel compiled with no other
starting."""


@dataclasses.dataclass(frozen=True)
class Compiled:
    """One kernel compiled in this process: its module and name, the dtypes of its array
    arguments, and the seconds the compile took (the functions it calls included)."""

    name: str
    dtypes: tuple[str, ...]
    seconds: float


def compiled() -> list[Compiled]:
    """The kernels of the numba set compiled in this process so far, in order (a kernel a
    compiling kernel calls is part of its caller's compile, not counted apart)."""
    return list(_WATCH.done)


def on_terminal() -> bool:
    """Is stderr an interactive terminal (where a progress line can be redrawn)?"""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def kept_where() -> str:
    """Where compiled kernels are kept, for a message."""
    return f"kept in {WHERE}" if CACHE else "not kept: no writable cache folder"


def dtypes_of(args) -> tuple[str, ...]:
    """The dtypes of the array types among the Numba argument types ``args``, once each."""
    found = [str(a.dtype) for a in args if hasattr(a, "dtype") and hasattr(a, "ndim")]
    return tuple(dict.fromkeys(found))


class CompileWatch(event.Listener):
    """Listens to Numba's compile events: records each kernel of this set compiled, and on
    a terminal shows what is compiling."""

    def __init__(self):
        self.done: list[Compiled] = []
        self.depth = 0  # compiles under way: a kernel's compile compiles what it calls
        self.started = 0.0
        self.lock = threading.Lock()  # the timer's thread ends bursts
        self.burst = None  # the kernels compiled in the burst under way, on a terminal
        self.burst_dtypes = ()
        self.burst_started = self.burst_ended = 0.0
        self.shown = 0  # width of the status line on the terminal (0: none shown)
        self.timer = None
        # which quiet timer may end the burst: each compile that starts moves it on, so a
        # timer that fired too late to be cancelled finds itself outdated (see end_burst)
        self.generation = 0
        self.told_no_cache = False  # the no-cache notice is printed once, at the first compile

    def on_start(self, ev):
        """Numba's compile-start event ``ev``: start the notice, the count and the status line."""
        if self.depth == 0 and is_kernel(ev):
            self.started = time.perf_counter()
            with self.lock:
                if not CACHE and not self.told_no_cache:
                    from tqdm import tqdm

                    self.told_no_cache = True
                    # through tqdm, which takes a progress bar (a run's first step) off the line
                    tqdm.write(no_cache_notice(), file=sys.stderr)
                self.generation += 1
                if self.timer is not None:
                    self.timer.cancel()
                if self.burst is None and on_terminal():
                    self.burst, self.burst_started = [], self.started
                    self.burst_dtypes = dtypes_of(ev.data["args"])
                if self.burst is not None:
                    self.show(status_line(self.burst_dtypes, len(self.burst),
                                          self.started - self.burst_started))
        self.depth += 1

    def on_end(self, ev):
        """Numba's compile-end event ``ev``: record the kernel, arm the end of the burst."""
        self.depth -= 1
        if self.depth == 0 and is_kernel(ev):
            fn = ev.data["dispatcher"].py_func
            done = Compiled(f"{fn.__module__.removeprefix(PACKAGE + '.')}.{fn.__qualname__}",
                            dtypes_of(ev.data["args"]), time.perf_counter() - self.started)
            self.done.append(done)
            with self.lock:
                if self.burst is not None:
                    # the line is cleared as soon as the compile is over, so that whatever
                    # the program writes next (a print, a progress bar) lands on a clean line
                    self.clear()
                    self.burst.append(done)
                    self.burst_ended = time.perf_counter()
                    self.timer = threading.Timer(QUIET_SECONDS, self.end_burst,
                                                 args=(self.generation,))
                    self.timer.daemon = True
                    self.timer.start()

    def show(self, text: str) -> None:
        """Write ``text``, the status line, over the terminal's current line, cut to its width."""
        text = text[:max(shutil.get_terminal_size().columns - 1, 40)]
        sys.stderr.write("\r" + text)
        sys.stderr.flush()
        self.shown = len(text)

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * self.shown + "\r")
            sys.stderr.flush()
            self.shown = 0

    def end_burst(self, generation: int | None = None):
        """Say in one line what the burst compiled.

        A timer that has fired cannot be cancelled: when a compile starts just then, this
        runs after ``on_start`` let the lock go, while that compile is under way. Its
        generation is then an old one, and the burst goes on (else the summary would come
        early, and the kernel compiling be left out of the count).

        Args:
            generation: The burst's generation when the quiet timer was armed; None: at exit.
        """
        with self.lock:
            if self.burst is None or generation not in (None, self.generation):
                return
            from tqdm import tqdm

            self.clear()
            dtypes = tuple(dict.fromkeys(d for c in self.burst for d in c.dtypes))
            n, seconds = len(self.burst), max(self.burst_ended - self.burst_started, 0.0)
            self.burst = None
            # through tqdm, which takes a progress bar of its own off the line and back
            tqdm.write(f"tinymbv2: compiled {n} numba kernel{'s' * (n != 1)} for {what(dtypes)} "
                       f"in {seconds:.0f} s ({kept_where()})", file=sys.stderr)


def is_kernel(ev) -> bool:
    """Is the compile event ``ev`` about a function of the numba kernel set?"""
    fn = getattr(ev.data["dispatcher"], "py_func", None)
    return getattr(fn, "__module__", "").startswith(PACKAGE + ".")


def what(dtypes) -> str:
    """The ``dtypes`` for a message: "float32", "float32 and float64", "a, b and c"."""
    if not dtypes:
        return "their arguments"
    return " and ".join([", ".join(dtypes[:-1]), dtypes[-1]] if len(dtypes) > 1 else dtypes)


def status_line(dtypes, done: int, seconds: float) -> str:
    """The line a terminal shows while a kernel compiles: what, how many so far, how long.

    The count comes first, so that a narrow terminal cuts the end of the line, not the count.

    Args:
        dtypes: The dtypes being compiled for.
        done: The kernels compiled so far in this burst.
        seconds: The seconds the burst has taken.

    Returns:
        The line.
    """
    when = "first run only" if CACHE else "every run"
    return (f"tinymbv2: compiling numba kernels ({what(dtypes)}, {when}): {done} done, "
            f"{seconds:.0f} s; about a minute per model on 2 cores, {kept_where()}")


_WATCH = CompileWatch()
event.register("numba:compile", _WATCH)
atexit.register(_WATCH.end_burst)
