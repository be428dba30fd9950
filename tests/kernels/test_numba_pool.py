"""Numba kernel set: the batched small-image GEMM paths and its single thread pool.

The shapes of test_kernels.py (n <= 4) keep one image per GEMM; these tests
reach the other paths, check determinism across thread counts, and check that
the set pins SciPy's BLAS (used inside numba) while leaving NumPy's alone.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kernel_cases import three_runs
from test_kernels import TOL64, assert_close
from tinymbv2.kernels import kernel_set

REFERENCE, NUMBA = kernel_set("reference"), kernel_set("numba")

# ------------------------------- numba: batched small images, one thread pool
# The shapes above (n <= 4) keep one image per GEMM. These reach the other
# paths: small images (H*W < 64, 1x1 included) batched side by side into one
# GEMM, a short last batch, and backward-weight partials of many images each.
SMALL_IMAGE_CASES = [(64, 24, 4, 4, 40), (37, 16, 7, 7, 24), (21, 8, 1, 1, 12), (19, 6, 10, 10, 5)]


def pointwise_calls(rng, dtype, n, ci, h, w, co):
    x = rng.standard_normal((n, ci, h, w)).astype(dtype)
    wp = rng.standard_normal((co, ci, 1, 1)).astype(dtype)
    gy = rng.standard_normal((n, co, h, w)).astype(dtype)
    return {
        "pointwise_conv2d_forward": (x, wp),
        "pointwise_conv2d_backward_input": (gy, wp),
        "pointwise_conv2d_backward_weight": (gy, x),
    }


@pytest.mark.parametrize("shape", SMALL_IMAGE_CASES, ids=str)
def test_numba_pointwise_batched_images_match_reference(shape):
    rng = np.random.default_rng(8)
    for name, args in pointwise_calls(rng, np.float64, *shape).items():
        assert_close(getattr(NUMBA, name)(*args), getattr(REFERENCE, name)(*args), TOL64, name)


def test_numba_gemm_kernels_deterministic_across_thread_counts():
    """Bit-identical on repeated runs and with 1 thread as with all of them, on
    the batched-image and many-images-per-partial paths of the GEMM kernels."""
    rng = np.random.default_rng(9)
    calls = {}
    for shape in SMALL_IMAGE_CASES:
        for name, args in pointwise_calls(rng, np.float32, *shape).items():
            calls[f"{name} {shape}"] = args
    x = rng.standard_normal((19, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    for s in [(1, 1), (2, 2)]:
        gy = rng.standard_normal(NUMBA.conv2d_forward(x, w, s, (1, 1)).shape).astype(np.float32)
        calls[f"conv2d_forward {s}"] = (x, w, s, (1, 1))
        calls[f"conv2d_backward_input {s}"] = (gy, w, x.shape, s, (1, 1))
        calls[f"conv2d_backward_weight {s}"] = (gy, x, w.shape, s, (1, 1))

    def run_all():
        return {k: getattr(NUMBA, k.split()[0])(*a).tobytes() for k, a in calls.items()}

    first, second, single = three_runs(run_all)
    for k in calls:
        assert first[k] == second[k], f"{k} differs between runs"
        assert first[k] == single[k], f"{k} depends on Numba's thread count"


def _run_python(code, **env):
    chosen = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")
    full_env = {k: v for k, v in os.environ.items() if k not in chosen}
    full_env.update(env)
    done = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done


ONE_POOL_PROBE = """
import json, os
import scipy.linalg.cython_blas
from threadpoolctl import threadpool_info
def blas():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
before = blas()
import tinymbv2.kernels.numba
from tinymbv2.kernels.numba import pool
import numba
print(json.dumps(dict(before=before, after=blas(), pinned=pool.PINNED_BLAS,
                      passive=pool.PASSIVE_POOL, layer=numba.threading_layer(),
                      env=os.environ.get("OMP_WAIT_POLICY"))))
"""


def test_numba_set_pins_scipy_blas_and_leaves_numpy_blas_alone():
    """Importing the numba set limits the BLAS its np.dot calls (SciPy's) to one
    thread, changes no other BLAS, and starts Numba's pool passive without
    leaving OMP_WAIT_POLICY in the environment (a fresh process: import order matters)."""
    import scipy

    done = _run_python(ONE_POOL_PROBE, OMP_DISPLAY_ENV="VERBOSE")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    pinned, before, after = out["pinned"], out["before"], out["after"]
    assert pinned, "no BLAS pinned"
    for path in pinned:
        assert after[path] == 1, path
    for path, n in after.items():
        if path not in pinned:
            assert n == before[path], f"{path}: {before[path]} -> {n} threads"
    scipy_dir = os.path.realpath(os.path.dirname(scipy.__file__))
    if any(os.path.realpath(p).startswith(scipy_dir) for p in before):  # SciPy ships its own BLAS
        assert all(os.path.realpath(p).startswith(scipy_dir) for p in pinned), pinned
        numpy_blas = [p for p in before if "numpy" in os.path.realpath(p)]
        assert numpy_blas and not set(numpy_blas) & set(pinned)
    assert out["env"] is None
    if out["layer"] == "omp":
        assert out["passive"]
        assert "GOMP_SPINCOUNT = '0'" in done.stderr  # what PASSIVE means to GNU OpenMP


def test_numba_pool_keeps_the_users_wait_policy():
    done = _run_python(ONE_POOL_PROBE, OMP_WAIT_POLICY="ACTIVE", OMP_DISPLAY_ENV="VERBOSE")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["passive"] is False and out["env"] == "ACTIVE"
    if out["layer"] == "omp":
        assert "OMP_WAIT_POLICY = 'ACTIVE'" in done.stderr
        assert "GOMP_SPINCOUNT = '0'" not in done.stderr


IDLE_PROBE = """
import json, os, sys, time
if "torch" in sys.argv:
    import torch  # first: its GNU OpenMP runtime goes into the global symbol scope
if "omppool" in sys.argv:
    from numba.np.ufunc import omppool  # Numba's OpenMP layer, imported the ordinary way
import numpy as np
import tinymbv2.kernels.numba
from tinymbv2.kernels.numba import pool
import numba
from numba import njit, prange

@njit(parallel=True)
def bump(a):
    for i in prange(a.shape[0]):
        a[i] += 1.0

a = np.zeros(64)
bump(a)
start = time.process_time() - time.thread_time()  # CPU time of every thread but this one
for _ in range(10):
    bump(a)
    time.sleep(0.05)
idle = (time.process_time() - time.thread_time() - start) / 10
print(json.dumps(dict(openmp_first=pool.openmp_loaded(), passive=pool.PASSIVE_POOL,
                      layer=numba.threading_layer(), threads=numba.get_num_threads(), idle_ms=1e3 * idle)))
"""


def _idle_probe(*argv, **env):
    code = IDLE_PROBE.replace('sys.argv', repr(list(argv)))
    return json.loads(_run_python(code, **env).stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PyTorch's OpenMP in the global scope: Linux")
def test_numba_pool_sleeps_when_pytorch_loaded_openmp_first():
    """With PyTorch imported first its GNU OpenMP is in the global symbol scope, and Numba's
    layer would run on that runtime, spinning between loops. The numba set loads the layer
    bound to a runtime of its own, passive: after each loop its threads burn no CPU while the
    caller sleeps 50 ms. The control, the user's OMP_WAIT_POLICY=ACTIVE, shows the probe sees
    spinning: the worker then burns most of those 50 ms (less on a loaded machine)."""
    out = _idle_probe("torch")
    if out["threads"] < 2:
        pytest.skip("one thread: no worker to sleep or spin")
    assert out["openmp_first"], "PyTorch's wheel for Linux loads libgomp globally"
    assert out["passive"] is True
    if out["layer"] == "omp":
        assert out["idle_ms"] < 1.0, out
    spinning = _idle_probe("torch", OMP_WAIT_POLICY="ACTIVE")
    assert spinning["passive"] is False
    if spinning["layer"] == "omp":
        assert spinning["idle_ms"] > 5.0, spinning


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PyTorch's OpenMP in the global scope: Linux")
def test_numba_pool_prefers_the_workqueue_when_it_must_share_pytorchs_openmp():
    """Numba's OpenMP layer imported before the numba set, after PyTorch: it is bound to
    PyTorch's runtime already. The set then asks Numba for its workqueue layer, whose
    threads sleep when idle; a layer the user names is kept."""
    out = _idle_probe("torch", "omppool")
    if out["threads"] < 2:
        pytest.skip("one thread: no pool")
    assert (out["layer"], out["passive"]) == ("workqueue", True)
    assert out["idle_ms"] < 1.0, out
    named = _idle_probe("torch", "omppool", NUMBA_THREADING_LAYER="omp")
    assert (named["layer"], named["passive"]) == ("omp", False)


def test_the_openmp_probe_fails_closed_where_there_is_no_global_symbol_scope(monkeypatch):
    """On Windows ``ctypes.CDLL(None)`` raises TypeError: the probe answers False (no runtime
    there to bind to) instead of raising, so the numba set imports; start_numba_pool runs."""
    from tinymbv2.kernels.numba import pool

    def no_global_scope(name, *args, **kwargs):
        if name is None:
            raise TypeError("expected str, bytes or os.PathLike object, not NoneType")
        return ctypes_cdll(name, *args, **kwargs)

    ctypes_cdll = pool.ctypes.CDLL
    monkeypatch.setattr(pool.ctypes, "CDLL", no_global_scope)
    assert pool.openmp_loaded() is False
    assert pool.start_numba_pool() is False  # the pool runs already: nothing to apply
