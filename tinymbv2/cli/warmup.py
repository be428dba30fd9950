"""``tinymbv2 warmup``: compile the numba kernels ahead of time (``tinymbv2.train.warmup``)."""
from __future__ import annotations

import sys
import time


def add_warmup(p) -> None:
    """Add the arguments of ``tinymbv2 warmup`` to its sub-parser ``p``."""
    p.add_argument("--float64", action="store_true",
                   help="also compile the float64 kernels (gradient checks, the tests)")


def run_warmup(args) -> int:
    """Run ``tinymbv2 warmup`` with the parsed ``args``; returns the exit code."""
    # imported here: loading the numba kernel set starts its thread pool, which the other
    # commands should not pay for when they are only parsing their arguments
    from ..kernels.numba.cache import CACHE, WHERE, where_numba_looked
    from ..train.warmup import warmup

    if not CACHE:  # the one line: nothing has compiled, so the kernels' own notice is not shown
        print(f"tinymbv2 warmup: error: no writable folder for Numba's cache (tried "
              f"{where_numba_looked()}), so nothing compiled now would be kept; set "
              "NUMBA_CACHE_DIR to a writable folder", file=sys.stderr)
        return 2
    dtypes = ("float32", "float64") if args.float64 else ("float32",)
    print(f"warming up the numba kernels: the training and inference steps of the default "
          f"model, fused and plain, per input shape, {' and '.join(dtypes)} (cache: {WHERE})",
          flush=True)
    start, total = time.perf_counter(), 0
    for w in warmup(dtypes):
        shape = f"{w.case.in_channels}x{w.case.size}x{w.case.size}"
        n = len(w.compiled)
        done = f"{n} kernel{'s' * (n != 1)} compiled" if n else "all cached"
        print(f"  {w.dtype:<8} {w.case.name + ' (' + shape + ')':<36} {done:<20} "
              f"{w.seconds:6.1f} s", flush=True)
        total += len(w.compiled)
    seconds = time.perf_counter() - start
    if total:
        print(f"compiled {total} kernel{'s' * (total != 1)} in {seconds:.0f} s; from now on "
              "runs load them from the cache instead of compiling")
    else:
        print(f"nothing to compile: the cache had every kernel ({seconds:.1f} s)")
    return 0
