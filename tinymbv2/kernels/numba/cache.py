"""Where the numba kernels' machine code is kept between processes: Numba's disk cache.

Every kernel is compiled with ``cache=CACHE``. Numba looks for a folder to cache a
function in when the function is *decorated* (``@njit(cache=True)`` builds its cache
object there and then), trying in order:

1. ``NUMBA_CACHE_DIR`` (``numba.config.CACHE_DIR``), when set;
2. ``__pycache__`` beside the source file (inside the installed package);
3. the user's cache folder (``~/.cache/numba``, or ``$XDG_CACHE_HOME/numba``);

each only if it can be created and written. When none can -- a wheel installed
read-only, run by an account without a writable home (a container, a service
account) -- decorating raises ``RuntimeError: cannot cache function ...: no locator
available``, so importing the kernel set failed. ``find_cache`` asks Numba's own
locators the same question once, before any kernel module is imported (this module is
imported first by ``tinymbv2.kernels.numba``), and when the answer is no, the kernels
are compiled without a disk cache: they work, and each process compiles the kernels it
uses again. One line on stderr says so, and how to get the cache back
(``no_cache_notice``), when the first kernel compiles (``.compiling``): a process
that compiles nothing is not told, and ``tinymbv2 warmup``, which then refuses to run
(nothing it compiled would be kept), says it in its own one line.
"""
from __future__ import annotations

import os
import types

from numba.core import config
from numba.core.caching import FunctionCache
from numba.misc.appdirs import AppDirs

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
"""The numba kernel set's folder (``tinymbv2/kernels/numba``)."""


def kernel_folders() -> list[str]:
    """The folders that hold kernel modules: this package and its sub-packages."""
    return sorted(root for root, _dirs, files in os.walk(PACKAGE_DIR) if "__init__.py" in files)


def cache_folder(source_file: str) -> str:
    """The folder Numba caches the functions of ``source_file`` in.

    Args:
        source_file: A Python file of the package.

    Returns:
        The folder.

    Raises:
        RuntimeError: Numba's: no locator available, no folder it can write to.
    """
    # A do-nothing function that claims to live in source_file: Numba picks its
    # folder from the function's file, exactly as for a kernel defined there.
    probe = types.FunctionType((lambda: None).__code__.replace(co_filename=source_file), {})
    return FunctionCache(probe).cache_path


def find_cache() -> tuple[bool, str]:
    """(whether the kernels can be cached on disk, where -- or why not).

    Asks Numba's locators for every folder of kernel modules (each has its own cache
    folder), with the settings of this process (``NUMBA_CACHE_DIR``, ``HOME``, ...).
    """
    folders = []
    try:
        for folder in kernel_folders():
            folders.append(cache_folder(os.path.join(folder, "__init__.py")))
    except RuntimeError as exc:
        return False, str(exc)
    elsewhere = [f for f in folders if not f.startswith(PACKAGE_DIR + os.sep)]
    if not elsewhere:
        return True, os.path.join(PACKAGE_DIR, "**", "__pycache__")
    return True, os.path.dirname(elsewhere[0])  # NUMBA_CACHE_DIR or the user's cache folder


def where_numba_looked() -> str:
    """The folders Numba tried for its cache, in its order, for a message."""
    user = AppDirs(appname="numba", appauthor=False).user_cache_dir  # Numba's user-wide folder
    tried = [f"NUMBA_CACHE_DIR ({config.CACHE_DIR})"] if config.CACHE_DIR else []
    tried += [f"the package folder ({PACKAGE_DIR})", f"the user's cache folder ({user})"]
    return ", ".join(tried)


def no_cache_notice() -> str:
    """The one line that says the kernels cannot be cached: where Numba looked, and what to do."""
    return (f"tinymbv2: no writable folder for Numba's cache (tried {where_numba_looked()}), so "
            "the numba kernels are compiled again in every process (a minute or two for a "
            "training step); set NUMBA_CACHE_DIR to a writable folder to keep them")


CACHE, WHERE = find_cache()
"""Whether the kernels are cached on disk (``cache=CACHE`` in every ``@njit``), and the
folder they are cached in, or Numba's reason why they cannot be."""
