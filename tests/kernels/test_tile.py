"""kernels/numba/tile.py: the register-block GEMM every product of the numba set runs on.

Its edges are where a hand-emitted kernel goes wrong: the masked columns past a block's
width, the row counts 1..6, strided left operands, an empty sum, and the ``accumulate``
flag that lets a caller split a sum into chunks without changing a bit.
"""
import numpy as np
import pytest

from tinymbv2.kernels.numba.layout import aligned_empty
from tinymbv2.kernels.numba.llvm import VECTOR_BYTES
from numba import njit

from tinymbv2.kernels.numba.batchnorm.channels_last import affine_rows_inplace
from tinymbv2.kernels.numba.tile import SUM_CHUNK, TILE_ROWS, TILE_VECTORS, product, strip_width

DTYPES = [np.float64, np.float32]


def tolerance(dtype, k):
    return (1e-12 if dtype == np.float64 else 3e-5) * max(1.0, np.sqrt(k))


def width(dtype):
    width = VECTOR_BYTES * TILE_VECTORS // np.dtype(dtype).itemsize
    assert strip_width(dtype) == width
    return width


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [1, 5, TILE_ROWS, TILE_ROWS + 1, 3 * TILE_ROWS - 1, 30])
@pytest.mark.parametrize("k", [0, 1, 7, 130])
@pytest.mark.parametrize("strip", ["wide", "half", "one"])
def test_product_equals_numpy_on_its_block_only(dtype, m, k, strip):
    """Two whole strips of columns, then a narrower one: masked in the wide blocks, or in
    blocks of half or a quarter of the vectors (and more rows)."""
    rng = np.random.default_rng(m * 1000 + k)
    last = {"wide": width(dtype) - 3, "half": width(dtype) // 2 - 1, "one": 3}[strip]
    n = 2 * width(dtype) + last
    a = rng.standard_normal((m + 3, k)).astype(dtype)
    b = rng.standard_normal((k, n + 4)).astype(dtype)
    out = np.full((m + 3, n + 4), np.nan, dtype)
    product(a, b, out, 2, m + 2, 3, n + 3, False)
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(out[2:m + 2, 3:n + 3], want[2:m + 2, 3:n + 3], rtol=0,
                               atol=tolerance(dtype, k))
    inside = np.zeros(out.shape, bool)
    inside[2:m + 2, 3:n + 3] = True
    assert np.isnan(out[~inside]).all()  # nothing outside the block read into or written


@pytest.mark.parametrize("dtype", DTYPES)
def test_product_reads_any_view_of_its_left_operand(dtype):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((40, 13)).astype(dtype)
    b = rng.standard_normal((40, 70)).astype(dtype)
    for a in (w.T, w[::-1].T, w.T[::2]):  # transposed, reversed, every other row
        out = np.empty((a.shape[0], 70), dtype)
        product(a, b, out, 0, a.shape[0], 0, 70, False)
        np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=0, atol=tolerance(dtype, 40))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_sum_in_chunks_gives_the_bits_of_one_pass(dtype):
    """accumulate=True starts from out's values: chunks of K summed in order are the
    same FMAs in the same order as the whole sum."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((11, 300)).astype(dtype), rng.standard_normal((300, 77)).astype(dtype)
    whole = np.empty((11, 77), dtype)
    product(a, b, whole, 0, 11, 0, 77, False)
    chunked = np.empty((11, 77), dtype)
    for k0, k1 in [(0, 1), (1, 100), (100, 101), (101, 300)]:
        product(a[:, k0:k1], b[k0:k1], chunked, 0, 11, 0, 77, k0 > 0)
    assert chunked.tobytes() == whole.tobytes()
    again = np.full((11, 77), 1.5, dtype)
    product(a, b, again, 0, 11, 0, 77, True)  # onto 1.5: 1.5 + a @ b
    np.testing.assert_allclose(again, 1.5 + a.astype(np.float64) @ b, rtol=0, atol=tolerance(dtype, 300))


def test_a_row_is_the_same_in_any_block():
    """Blocks of 6, 12 or 24 rows, and the rows each computes past the edge (never
    stored): row r of out gets the same bits wherever the rows are cut."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((31, 50)).astype(np.float32), rng.standard_normal((50, 40)).astype(np.float32)
    whole = np.empty((31, 40), np.float32)
    product(a, b, whole, 0, 31, 0, 40, False)
    for cut in (1, 5, 7, 13, 30):
        parts = np.empty((31, 40), np.float32)
        product(a, b, parts, 0, cut, 0, 40, False)
        product(a, b, parts, cut, 31, 0, 40, False)
        assert parts.tobytes() == whole.tobytes()


def test_product_names_what_is_wrong():
    a, b = np.ones((3, 4)), np.ones((5, 6))
    with pytest.raises(ValueError, match="do not share K"):
        product(a, b, np.empty((3, 6)), 0, 3, 0, 6, False)
    with pytest.raises(ValueError, match="contiguous rows"):
        product(a, np.ones((6, 4)).T, np.empty((3, 6)), 0, 3, 0, 6, False)
    with pytest.raises(ValueError, match="contiguous rows"):
        product(a, np.ones((4, 6)), np.empty((6, 3)).T, 0, 3, 0, 6, False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("skip", [0, 1])
def test_streamed_stores_give_the_same_bits(dtype, skip):
    """stream=True writes whole aligned blocks past the caches, the rest as usual; the
    values are the same bits either way, and a misaligned output is still right."""
    rng = np.random.default_rng(4)
    cols = 3 * width(dtype) + 5  # whole blocks, then a narrow strip that is never streamed
    a = rng.standard_normal((23, 300)).astype(dtype)  # two chunks of the sum, then more
    b = rng.standard_normal((300, cols)).astype(dtype)
    row = 4 * width(dtype)  # 1 KiB: every row starts a cache line (unless skip=1)
    plain = aligned_empty((23, row), dtype)[:, skip:skip + cols]
    streamed = aligned_empty((23, row), dtype)[:, skip:skip + cols]
    product(a, b, plain, 0, 23, 0, cols, False, False)
    product(a, b, streamed, 0, 23, 0, cols, False, True)
    assert streamed.tobytes() == plain.tobytes()
    np.testing.assert_allclose(streamed, a.astype(np.float64) @ b, rtol=0, atol=tolerance(dtype, 300))


@njit
def _then_affine(a, b, out, i0, i1, j0, j1, table, t0, relu6):
    product(a, b, out, i0, i1, j0, j1, False)
    affine_rows_inplace(out, i0, i1, j0, j1, table[0, t0:], table[1, t0:], table[2, t0:], relu6)


@njit
def _with_epilogue(a, b, out, i0, i1, j0, j1, table, t0, relu6):
    product(a, b, out, i0, i1, j0, j1, False, False, table, t0, relu6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu6", [True, False])
@pytest.mark.parametrize("m,k,n", [(13, 7, 5), (30, SUM_CHUNK + 44, 100), (7, 2 * SUM_CHUNK + 1, 64),
                                   (1, 3, 17)])
def test_the_epilogue_in_registers_gives_the_bits_of_the_pass_after(dtype, relu6, m, k, n):
    """``product`` with a table (the BatchNorm applied to the sums before they are stored, on the last
    chunk of a sum only, every block width) gives the bits of ``product`` and then
    ``affine_rows_inplace``; outside its block it writes nothing; ReLU6's clamp takes
    effect at both ends."""
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((m + 2, k)).astype(dtype)
    b = rng.standard_normal((k, n + 3)).astype(dtype)
    t0 = 5  # out's column 0 is the table's column 5
    table = rng.standard_normal((3, n + 3 + t0)).astype(dtype)
    table[1] *= 4
    want, got = (np.full((m + 2, n + 3), np.nan, dtype) for _ in range(2))
    _then_affine(a, b, want, 1, m + 1, 2, n + 2, table, t0, relu6)
    _with_epilogue(a, b, got, 1, m + 1, 2, n + 2, table, t0, relu6)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isnan(got[0]).all() and np.isnan(got[:, :2]).all() and np.isnan(got[:, -1]).all()
    if relu6:
        inside = got[1:m + 1, 2:n + 2]
        assert inside.min() == 0 and (m * n < 100 or inside.max() == 6)


def test_aligned_empty_starts_a_cache_line():
    for shape, dtype in [((3, 5), np.float32), ((8, 144, 56, 56), np.float32), ((7,), np.float64)]:
        x = aligned_empty(shape, dtype)
        assert x.shape == shape and x.dtype == dtype and x.flags.c_contiguous
        assert x.ctypes.data % 64 == 0
