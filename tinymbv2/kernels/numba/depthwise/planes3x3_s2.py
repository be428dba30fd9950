"""Numba planes for MobileNetV2's strided depthwise filter: 3x3, stride 2, padding 1.

Output column o reads input columns 2o - 1, 2o, 2o + 1: every other element, which
LLVM vectorises as interleaved loads (and, for the input gradient, stores), with no
subsampling of a stride-1 row and no phase copies (the general strided routines of
``.planes3x3``, which serve every other stride and padding). Measured at 224 px batch
8 against those, the input gradient is much faster on the 112 and 56 px planes
(figures: docs/kernels.md, "Depthwise"). The weight gradient instead splits the padded
plane into its even and odd rows once, so that its sums run over the whole plane in
one loop (``weight3x3_s2``).

The fused depthwise stage (``..stage``) computes the forward another way: it
writes ReLU6(BN1(e)) straight into the four *phases* of the zero-padded plane (rows and
columns of each parity, ``split_phases``), a pass it has to make anyway, after which every
tap is a contiguous run and the whole plane one loop (``correlate_phases``), which made
block 2's stage forward at 224 px faster. Both forms sum every
output in the same order, padding included, so they give the same bits. Alone, the phase
form is faster on the 56 and 28 px planes and slower on the 112 px ones (the split's
extra pass over a plane that no longer fits in L1), so the separate op keeps the rows.

Like ``.planes3x3``, each routine works on one plane; the weight gradient's
running sums may be reassociated into SIMD partial sums in an order fixed by the
compiled loop and the shapes, so results are bit-identical across runs and threads.
"""
from __future__ import annotations

from numba import njit

from ..cache import CACHE
from ..prefetch import prefetch_parts
from .planes3x3 import add_nine, correlate_runs, rows3

_JIT = dict(cache=CACHE, fastmath=False)
_JIT_REDUCE = dict(cache=CACHE, fastmath={"reassoc", "contract"})


@njit(**_JIT)
def _tap(row, c):
    """row[c], or 0 for a column in the padding."""
    return row[c] if 0 <= c < row.shape[0] else row.dtype.type(0)


@njit(**_JIT)
def _edge_output_s2(r0, r1, r2, w, col):
    """An output whose taps reach the padding (columns col .. col + 2): the interior formula
    with zeros there, so that every output is summed in the one order that the phase form
    (``correlate_phases``, on a zero-padded plane) uses too: the same bits either way."""
    return ((w[0, 0] * _tap(r0, col) + w[0, 1] * _tap(r0, col + 1) + w[0, 2] * _tap(r0, col + 2))
            + (w[1, 0] * _tap(r1, col) + w[1, 1] * _tap(r1, col + 1) + w[1, 2] * _tap(r1, col + 2))
            + (w[2, 0] * _tap(r2, col) + w[2, 1] * _tap(r2, col + 1) + w[2, 2] * _tap(r2, col + 2)))


@njit(**_JIT)
def row3x3_s2(out, r0, r1, r2, w):
    """One output row at stride 2, padding 1, from three input rows (zero outside them).

    ``out[o] = sum_{i,j} w[i, j] * r_i[2o - 1 + j]``. Outputs 1 to ``W//2 - 1`` read inside
    the rows; output 0 (and the last one when W is odd) reads the padding and is computed on
    its own, by the same formula with zeros there (``_edge_output_s2``).

    Args:
        out: The output row (Wo,), written.
        r0: The first input row (W,).
        r1: The second.
        r2: The third.
        w: The filter (3, 3).
    """
    wd, wo = r0.shape[0], out.shape[0]
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    for o in range(1, wd // 2):
        k = 2 * o - 1
        out[o] = ((w00 * r0[k] + w01 * r0[k + 1] + w02 * r0[k + 2])
                  + (w10 * r1[k] + w11 * r1[k + 1] + w12 * r1[k + 2])
                  + (w20 * r2[k] + w21 * r2[k + 1] + w22 * r2[k + 2]))
    out[0] = _edge_output_s2(r0, r1, r2, w, -1)
    if wd % 2 == 1:
        out[wo - 1] = _edge_output_s2(r0, r1, r2, w, 2 * wo - 3)


@njit(**_JIT)
def correlate3x3_s2(y, x, w, zero_row):
    """3x3 cross-correlation of a plane, stride 2, padding 1.

    Args:
        y: The output plane (Ho, Wo), written.
        x: The input plane (H, W).
        w: The filter (3, 3).
        zero_row: W zeros.
    """
    for oh in range(y.shape[0]):
        r0, r1, r2 = rows3(x, 2 * oh - 1, zero_row)
        row3x3_s2(y[oh], r0, r1, r2, w)


@njit(**_JIT)
def phase_width(wd):
    """Wq, the width of the phase planes of a plane ``wd`` wide: ``wd + 2`` made even, halved."""
    return (wd + 3) // 2


@njit(**_JIT)
def phase_size(h, wd):
    """The values of one phase plane: Ho + 2 rows of Wq (``split_phases``).

    Args:
        h: The plane's height.
        wd: The plane's width.

    Returns:
        The number of values.
    """
    return ((h - 1) // 2 + 3) * phase_width(wd)


@njit(**_JIT)
def split_phases(x, ph, mu, sc, bi, affine, ahead=None, write=False):
    """The four phases of a plane zero-padded by 1, flat at width Wq.

    ``ph[2 p + q]`` holds the padded rows of parity p and columns of parity q, so that
    padded element ``(2 r + p, 2 c + q)`` is ``ph[2 p + q][r * Wq + c]``. Input row i is
    padded row i + 1 and column j padded column j + 1: even j land in the odd-column phases
    at j / 2, odd j in the even-column phases at (j + 1) / 2, in one pass of
    every-other-element loads.

    Args:
        x: The plane (H, W).
        ph: The phases (4, ``phase_size``), written.
        mu: The channel's mean.
        sc: The channel's scale.
        bi: The channel's bias.
        affine: The values go through ``ReLU6((x - mu) * sc + bi)`` on the way (the
            depthwise stage's first BatchNorm, the very expression of
            ``batchnorm.affine_row``).
        ahead: Planes to prefetch meanwhile, a tuple of 1-D contiguous arrays (a part of
            each per row of x: ``..prefetch.prefetch_parts``); or None.
        write: Prefetch them for writing.
    """
    h, wd = x.shape
    wq = phase_width(wd)
    half = wd // 2
    ph[:] = 0
    zero, six = x.dtype.type(0), x.dtype.type(6)
    for i in range(h):
        p = (i + 1) % 2
        r = (i + 1) // 2
        even = ph[2 * p, r * wq:(r + 1) * wq]  # padded columns 0, 2, 4, ...: x[i, -1], x[i, 1], ...
        odd = ph[2 * p + 1, r * wq:(r + 1) * wq]  # padded columns 1, 3, ...: x[i, 0], x[i, 2], ...
        src = x[i]
        prefetch_parts(ahead, i, h, write)
        # The last odd-phase value (x[i, W - 1] for an odd W, else the right padding) is
        # written before the loop: written after it, it kept LLVM from vectorising the loop,
        # which then ran much slower.
        last = src[wd - 1] if wd % 2 == 1 else zero
        if affine:
            odd[half] = min(max((last - mu) * sc + bi, zero), six) if wd % 2 == 1 else zero
            for m in range(half):
                odd[m] = min(max((src[2 * m] - mu) * sc + bi, zero), six)
                even[m + 1] = min(max((src[2 * m + 1] - mu) * sc + bi, zero), six)
        else:
            odd[half] = last
            for m in range(half):
                odd[m] = src[2 * m]
                even[m + 1] = src[2 * m + 1]


@njit(**_JIT)
def correlate_phases(y, ph, w, wq, out):
    """The stride-2 3x3 correlation of a plane given by its phases.

    Tap (i, j) of output (oh, ow) reads padded element ``(2 oh + i, 2 ow + j)``: phase
    ``(i % 2, j % 2)`` at flat position ``q + (i // 2) Wq + j // 2``, ``q = oh Wq + ow``. So
    the whole plane is one loop over q, nine contiguous loads per output (the extra columns
    are dropped when ``out`` is copied into y), as the stride-1 ``correlate_flat`` does.

    Args:
        y: The output plane (Ho, Wo), written.
        ph: The phases (see ``split_phases``).
        w: The filter (3, 3).
        wq: Wq, the phases' width.
        out: Scratch of ``Ho * Wq`` values.
    """
    ho, wo = y.shape
    n = ho * wq
    ee, eo, oe, oo = ph[0], ph[1], ph[2], ph[3]
    correlate_runs(out, (ee[0:n], eo[0:n], ee[1:1 + n], oe[0:n], oo[0:n], oe[1:1 + n],
                         ee[wq:wq + n], eo[wq:wq + n], ee[wq + 1:wq + 1 + n]), w, n)
    for r in range(ho):
        dst, src = y[r], out[r * wq:r * wq + wo]
        for c in range(wo):
            dst[c] = src[c]


@njit(**_JIT)
def scratch_size(h, wd):
    """The scratch ``split_phases`` and ``correlate_phases`` need.

    Four phase planes and the output at their width.

    Args:
        h: The plane's height.
        wd: The plane's width.

    Returns:
        The number of values.
    """
    return 5 * phase_size(h, wd)


@njit(**_JIT)
def scatter3x3_s2(gx, gy, w, ahead=None, write=False):
    r"""The input gradient of ``correlate3x3_s2``, for the output gradient plane gy.

    Input row r is read by kernel row i of output row (r + 1 - i) / 2 when that is whole:
    an even r by kernel row 1 of output row r / 2 only, an odd r by rows 0 and 2 of output
    rows (r + 1) / 2 and (r - 1) / 2. Column 2m likewise takes tap 1 of output column m,
    and 2m + 1 taps 2 and 0 of columns m and m + 1:

        even r:  gx[r, 2m] = w[1,1] g[m]      gx[r, 2m+1] = w[1,2] g[m] + w[1,0] g[m+1]
        odd r:   gx[r, 2m] = w[0,1] p[m] + w[2,1] q[m]
                 gx[r, 2m+1] = (w[0,2] p[m] + w[0,0] p[m+1]) + (w[2,2] q[m] + w[2,0] q[m+1])

    with g = gy[r / 2], p = gy[(r + 1) / 2], q = gy[(r - 1) / 2]; terms whose output row
    or column does not exist are left out. Every gx row is written once, whole.

    The loops index gx and gy directly. Written as a helper called once per row on row
    views, the same sums cost a call with its array views per row where Numba does not
    inline the helper (from a serial loop, many times the work of the sums); inside the
    parallel kernels less, but the fused stage's backward still got faster on every plane
    size when the helper went (figures: docs/kernels.md, "Depthwise").

    Args:
        gx: The input gradient plane (H, W), written.
        gy: $\partial L / \partial y$ of the plane (Ho, Wo).
        w: The filter (3, 3).
        ahead: Planes to prefetch meanwhile, a tuple of 1-D contiguous arrays (a part of
            each per row of gx: ``..prefetch.prefetch_parts``); or None.
        write: Prefetch them for writing.
    """
    h, wd = gx.shape
    ho, wo = gy.shape
    n = wo - 1  # column pairs (2m, 2m + 1) that read outputs m and m + 1
    odd_tail = 2 * n + 1 < wd  # W even: column 2n + 1 reads output n only
    for r in range(h):
        prefetch_parts(ahead, r, h, write)
        if r % 2 == 0:  # kernel row 1 of output row r / 2 (which always exists)
            _one_kernel_row(gx, r, gy, r // 2, w[1, 0], w[1, 1], w[1, 2], n, odd_tail)
        elif (r + 1) // 2 < ho:
            p, q = (r + 1) // 2, (r - 1) // 2
            a0, a1, a2 = w[0, 0], w[0, 1], w[0, 2]
            b0, b1, b2 = w[2, 0], w[2, 1], w[2, 2]
            for m in range(n):
                gx[r, 2 * m] = a1 * gy[p, m] + b1 * gy[q, m]
                gx[r, 2 * m + 1] = ((a2 * gy[p, m] + a0 * gy[p, m + 1])
                                    + (b2 * gy[q, m] + b0 * gy[q, m + 1]))
            gx[r, 2 * n] = a1 * gy[p, n] + b1 * gy[q, n]
            if odd_tail:
                gx[r, 2 * n + 1] = a2 * gy[p, n] + b2 * gy[q, n]
        else:  # the last row, H even: kernel row 2 of the last output row only
            _one_kernel_row(gx, r, gy, (r - 1) // 2, w[2, 0], w[2, 1], w[2, 2], n, odd_tail)


@njit(inline="always", **_JIT)
def _one_kernel_row(gx, r, gy, g, k0, k1, k2, n, odd_tail):
    """Row r of ``scatter3x3_s2`` when one kernel row (k0, k1, k2) of one output row g
    reaches it: gx[r, 2m] = k1 g[m], gx[r, 2m + 1] = k2 g[m] + k0 g[m + 1]. Inlined where
    it is used (Numba IR), indexing the planes, no views: see ``scatter3x3_s2``."""
    for m in range(n):
        gx[r, 2 * m] = k1 * gy[g, m]
        gx[r, 2 * m + 1] = k2 * gy[g, m] + k0 * gy[g, m + 1]
    gx[r, 2 * n] = k1 * gy[g, n]
    if odd_tail:
        gx[r, 2 * n + 1] = k2 * gy[g, n]


@njit(**_JIT)
def weight_scratch_size(ho, wd):
    """The scratch ``weight3x3_s2`` needs.

    The even and the odd padded rows (Ho + 2 of each, at the padded width Wp made even) and
    the output gradient at half that width.

    Args:
        ho: The output plane's height.
        wd: The input plane's width.

    Returns:
        The number of values.
    """
    wp = wd + 2 + wd % 2
    return (ho + 2) * (2 * wp + wp // 2)


@njit(**_JIT_REDUCE)
def weight3x3_s2(acc, gy, x, scratch, ahead=None, write=False):
    r"""The weight gradient of ``correlate3x3_s2``, as nine running sums over one flat run.

    ``acc (3, 3) += sum_{oh, ow} gy[oh, ow] * x[2oh - 1 + i, 2ow - 1 + j]``. On the
    zero-padded plane xp (row width Wp, made even), tap (i, j) of output (oh, ow) reads
    ``xp[2oh + i, 2ow + j]``. Kernel rows 0 and 2 read the even padded rows (E, rows oh and
    oh + 1 of them), kernel row 1 the odd ones (O). With E and O stored flat and the output
    gradient laid out at half their width ``Wq = Wp / 2`` (``g``, after a zero row), position
    ``q = oh * Wq + ow`` reads ``E[2q + j]``, so

        acc[0, j] += sum_q g[q + Wq] * E[2q + j]      acc[1, j] += sum_q g[q + Wq] * O[2q + j]
        acc[2, j] += sum_q g[q] * E[2q + j]

    one loop over all rows, whose every-other-element loads LLVM vectorises as
    interleaved loads; each E value serves two kernel rows. Against the row-by-row sums
    this replaced (nine horizontal reductions per output row), the whole kernel got faster
    on every plane size, most on the larger planes, where it now runs near the speed of
    reading x from memory. The rows are copied in the loop here, not by a helper: called
    once per row, a helper cost more than the copy (figures: docs/kernels.md, "Depthwise").

    Args:
        acc: The filter's gradient (3, 3), added to.
        gy: $\partial L / \partial y$ of the plane (Ho, Wo).
        x: The input plane (H, W).
        scratch: ``weight_scratch_size(Ho, W)`` values.
        ahead: Planes to prefetch meanwhile, a tuple of 1-D contiguous arrays (a part of
            each per padded row: ``..prefetch.prefetch_parts``); or None.
        write: Prefetch them for writing.
    """
    h, wd = x.shape
    ho, wo = gy.shape
    wp = wd + 2 + wd % 2
    wq = wp // 2  # > Wo: the last column of every g row stays zero
    size = (ho + 2) * wp
    ev, od, g = scratch[:size], scratch[size:2 * size], scratch[2 * size:2 * size + (ho + 2) * wq]
    for r in range(ho + 2):  # padded row 2r into ev, 2r + 1 into od (input rows 2r - 1, 2r)
        prefetch_parts(ahead, r, ho + 2, write)
        for dst, row in ((ev, 2 * r - 1), (od, 2 * r)):
            d = dst[r * wp:(r + 1) * wp]
            d[0] = 0
            if 0 <= row < h:
                src = x[row]
                for c in range(wd):
                    d[c + 1] = src[c]
                for c in range(wd + 1, wp):
                    d[c] = 0
            else:
                d[:] = 0
    g[:] = 0
    for r in range(ho):
        dst, src = g[(r + 1) * wq:(r + 1) * wq + wo], gy[r]
        for c in range(wo):
            dst[c] = src[c]
    run = (ho + 1) * wq - 1
    g_mid, g_low = g[wq:wq + run], g[0:run]  # kernel rows 0 and 1; kernel row 2
    zero = acc.dtype.type(0)
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = zero
    for q in range(run):
        u, v = g_mid[q], g_low[q]
        k = 2 * q
        a, b, c = ev[k], ev[k + 1], ev[k + 2]
        s00 += u * a
        s01 += u * b
        s02 += u * c
        s20 += v * a
        s21 += v * b
        s22 += v * c
        s10 += u * od[k]
        s11 += u * od[k + 1]
        s12 += u * od[k + 2]
    add_nine(acc, s00, s01, s02, s10, s11, s12, s20, s21, s22)
