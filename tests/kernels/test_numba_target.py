"""The CPU the numba kernels compile for is Numba's target, not the host's CPU.

``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` choose what Numba compiles for (a cache built
for older CPUs, say). The register kernels (``llvm.py``, ``tile.py``) read the vector
width from the same target, so ``NUMBA_CPU_NAME=generic`` (a baseline x86-64: no AVX at
all) gets 32-byte vectors and no AVX-512 instruction, even on an AVX-512 host, and the
same results: each value of a product is the same chain of fused multiply-adds whatever
the vector width.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import llvm

CHILD = r"""
import json, sys
import numpy as np
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels.numba import llvm, tile

rng = np.random.default_rng(0)
x = rng.standard_normal((2, 40, 20, 20)).astype(np.float32)
w = rng.standard_normal((70, 40, 1, 1)).astype(np.float32)
np.save(sys.argv[1], kernel_set("numba").pointwise_conv2d_forward(x, w))
a, b = x[0, :, 0, :12].T.copy(), w[:, :, 0, 0].T.copy()   # (12, 40) @ (40, 70)
out = np.zeros((12, 70), np.float32)
tile.product(a, b, out, 0, 12, 0, 70, False)  # the register block, called from Python
assert np.allclose(out, a @ b, rtol=1e-5, atol=1e-5)
# compiled here, into an empty cache (Numba shows no machine code for a cached function)
asm = "".join(tile.product.inspect_asm().values())  # with the sweep and blocks it calls
print(json.dumps({"avx512": llvm.AVX512, "vector_bytes": llvm.VECTOR_BYTES,
                  "tile_vectors": tile.TILE_VECTORS, "features": llvm.target_features(),
                  "zmm": "zmm" in asm, "ymm": "ymm" in asm, "fmaf": "fmaf" in asm}))
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="NUMBA_CPU_NAME=generic is a baseline x86-64 on x86-64 only")
def test_numba_cpu_name_generic_gets_the_path_without_avx512(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    env.update(NUMBA_CPU_NAME="generic", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = tmp_path / "y.npy"
    child = subprocess.run([sys.executable, "-c", CHILD, str(out)], env=env, capture_output=True,
                           text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    seen = json.loads(child.stdout.strip().splitlines()[-1])
    assert seen["features"] == [] and not seen["avx512"]
    assert seen["vector_bytes"] == 32 and seen["tile_vectors"] == 2
    assert not seen["zmm"] and not seen["ymm"]  # not even AVX: the generic x86-64 has SSE2
    assert seen["fmaf"]  # the machine code is there: its FMAs are the C library's fmaf

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 40, 20, 20)).astype(np.float32)
    w = rng.standard_normal((70, 40, 1, 1)).astype(np.float32)
    y = np.load(out)
    np.testing.assert_allclose(y, kernel_set("reference").pointwise_conv2d_forward(x, w),
                               rtol=1e-5, atol=1e-5)
    # this process compiles for its own target (AVX-512 on the project's machine): the
    # same bits, as each output is the same chain of FMAs in the same order
    assert np.array_equal(y, kernel_set("numba").pointwise_conv2d_forward(x, w))


def test_the_kernels_read_numbas_target():
    """In this process: the flag is what Numba's code generator says, not llvmlite's host."""
    from numba.core.registry import cpu_target

    features = cpu_target.target_context.codegen().magic_tuple()[2].split(",")
    assert llvm.AVX512 == ("+avx512f" in features)
    assert llvm.VECTOR_BYTES == (64 if llvm.AVX512 else 32)
