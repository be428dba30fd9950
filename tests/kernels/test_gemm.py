"""kernels/numba/gemm.py's two matrix loops against NumPy, on the shapes their edge cases turn on.

The dot-product form blocks the output 4x4 and sums K in chunks of ``CHUNK``. So the shapes
below put rows, columns and terms on both sides of those multiples, and K across a chunk
boundary. The broadcast form is kernels/numba/tile.py's register block, whose own edges
``tests/kernels/test_tile.py`` covers; here it is checked through ``columns_nn``.
"""
import numpy as np
import pytest

from kernel_cases import three_runs
from tinymbv2.kernels.numba import gemm

ROWS = [1, 3, 4, 5, 8, 13]
TERMS = [1, 7, 8, 9, 16, 27]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("n", [1, 4, 6, 11])
def test_sum_of_products_equals_numpy(m, n, dtype):
    rng = np.random.default_rng(m * 100 + n)
    for b, k in [(1, 1), (2, 9), (3, 130), (1, gemm.CHUNK + 5)]:
        a = rng.standard_normal((b, m, k)).astype(dtype)
        c = rng.standard_normal((b, n, k)).astype(dtype)
        want = np.einsum("bmk,bnk->mn", a.astype(np.float64), c.astype(np.float64))
        got = gemm.sum_of_products(a, c)
        assert got.dtype == dtype and got.shape == (m, n)
        tol = 1e-12 if dtype == np.float64 else 2e-5
        scale = np.sqrt(b * k)  # the size of the sums' rounding relative to their terms
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("m", [1, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("n", [8, 11, 1000])
def test_a_few_rows_cut_in_columns_give_the_same_bits(m, n):
    """One or two blocks of rows (the classifier at batch 1 to 8) go to two threads by
    columns (``column_parts``): each output is the same sum, to the bit, as in one pass."""
    rng = np.random.default_rng(m + n)
    a = rng.standard_normal((1, m, 300)).astype(np.float32)
    c = rng.standard_normal((1, n, 300)).astype(np.float32)
    whole = np.empty((m, n), np.float32)
    for blk in range(gemm.row_blocks(m)):
        gemm.row_block(a, c, whole, np.int64(blk))
    assert gemm.column_parts(m, n) == (2 if m <= 8 else 1)
    assert np.array_equal(gemm.sum_of_products(a, c), whole)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("k", TERMS)
def test_columns_nn_equals_numpy_on_its_block_only(m, k, dtype):
    rng = np.random.default_rng(m * 100 + k)
    a = rng.standard_normal((m, k)).astype(dtype)
    x = rng.standard_normal((k, 37)).astype(dtype)
    out = np.full((m, 37), np.nan, dtype)
    gemm.columns_nn(a, x, out, 5, 30)
    want = a.astype(np.float64) @ x.astype(np.float64)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out[:, 5:30], want[:, 5:30], rtol=0, atol=tol * np.sqrt(k))
    assert np.isnan(out[:, :5]).all() and np.isnan(out[:, 30:]).all()  # nothing else written


def test_columns_nn_reads_a_transposed_view_of_its_weights():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((12, 6))  # a = w.T: the backward-input weights, a strided view
    x = rng.standard_normal((12, 20))
    out = np.empty((6, 20))
    gemm.columns_nn(w.T, x, out, 0, 20)
    np.testing.assert_allclose(out, w.T @ x, rtol=0, atol=1e-12)


def test_both_loops_give_the_same_bits_for_any_thread_count():
    rng = np.random.default_rng(2)
    a3 = rng.standard_normal((3, 10, 300)).astype(np.float32)
    c3 = rng.standard_normal((3, 7, 300)).astype(np.float32)
    a, x = rng.standard_normal((10, 20)).astype(np.float32), rng.standard_normal((20, 50)).astype(np.float32)

    def run():
        out = np.empty((10, 50), np.float32)
        gemm.columns_nn(a, x, out, 0, 50)
        return gemm.sum_of_products(a3, c3).tobytes(), out.tobytes()

    first, again, single = three_runs(run)
    assert first == again == single
