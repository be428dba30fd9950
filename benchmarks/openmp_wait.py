"""Both contestants wait the same way between parallel loops: GNU OpenMP's default spin.

Import this module before ``torch`` and ``tinymbv2`` in a benchmark that races them.

PyTorch's OpenMP runtime, when no policy is set, spins 300,000 times between parallel loops
before it sleeps (GNU OpenMP's default; ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` unset).
tinymbv2 on its own lets Numba's threads sleep at once (``tinymbv2/kernels/numba/pool.py``),
with PyTorch in the process too: that keeps it from crawling beside a busy process, at the
price of a wake-up per loop. A race should give both contestants the same wait, so this
module sets ``GOMP_SPINCOUNT`` to that default before either library loads (unless the user
set a policy): PyTorch's runtime behaves exactly as it would anyway, and tinymbv2, which keeps
a user's OpenMP settings, runs its loops on that same runtime. ``benchmarks.torch_first``
measures the libraries' own defaults and does not use this.
"""
from __future__ import annotations

import os

GNU_DEFAULT_SPINCOUNT = "300000"

if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
    os.environ["GOMP_SPINCOUNT"] = GNU_DEFAULT_SPINCOUNT
