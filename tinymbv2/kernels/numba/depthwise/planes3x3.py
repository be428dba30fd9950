"""Numba planes for the 3x3 depthwise convolution, MobileNetV2's only kind.

``..depthwise`` runs these for every 3x3 filter (any stride, padding
up to 2) and keeps its general per-tap loops for other sizes. The ideas:

* **All nine taps in one loop.** An output of a stride-1 correlation reads three
  input rows; on a zero-padded copy of the plane (row width Wp = W + 2 pw) every
  output has all nine taps, so the whole plane is one loop over flat positions
  ``q = r*Wp + c`` (``correlate3x3_padded``):

      out[q] = sum_{i, j} w[i, j] * xp[q + i*Wp + j]

  nine loads, nine multiply-adds and one store, vectorised over a run as long as
  the plane, with no edge cases (the 2 pw extra positions per row are dropped).
  Row by row, the 28-pixel rows left LLVM one SIMD vector and ten scalar
  iterations plus two bounds-tested edge outputs per row: the padded plane is faster
  at every plane size of MobileNetV2, most on the small planes (figures:
  docs/kernels.md, "Depthwise").
* **The stride-2 forward is computed at stride 1 and subsampled**, row by row
  (``row3x3``, ``correlate3x3_strided``): faster than loads with a stride
  the compiler cannot vectorise, and than splitting the input rows into column
  phases first (measured at 8x96x112x112).
* **The stride-2 weight gradient reads the input as column phases**: tap j of
  output column ow reads input column ``(ow + u)*s + q``, element ``ow + u`` of the row's
  phase q; each input row is split once into its s contiguous phases
  (``weight3x3_strided``; there the split pays for itself, as the gradient
  would otherwise have to be dilated to 4x the work).
* **The input gradient of a stride-1 correlation is a correlation** of dL/dy with
  the flipped kernel and padding 2 - p: the same padded-plane routine. With stride s, gx
  column ``m*s + q`` (phase q) receives tap j of output column ``m + (q + pw - j) / s``
  when that divides exactly, so each phase of a gx row is a few contiguous
  multiply-adds of dL/dy rows, interleaved into the row at the end
  (``scatter3x3_strided_plane``).
* **Stride 2 with padding 1** (MobileNetV2's only strided case) has routines of its own
  in ``.planes3x3_s2``; the strided ones here serve every other stride and
  padding.
* **The weight gradient keeps nine running sums** (``weight3x3_padded`` at
  stride 1, over the padded flat plane, three input and three gradient loads
  per step; ``weight3x3_strided``).
  They may be reassociated (``fastmath`` ``reassoc``) so they vectorise into
  SIMD partial sums; the order is then fixed by the compiled loop and the
  shapes, never by thread timing: results are bit-identical from run to run
  and for any number of threads. They start from ``acc.dtype.type(0)``, not
  ``acc[0, 0] * 0``, which Numba types as float64 (float32 times an int) and
  which made the sums run in float64 at half the SIMD width.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..cache import CACHE
from ..prefetch import prefetch_parts

_JIT = dict(cache=CACHE, fastmath=False)
_JIT_REDUCE = dict(cache=CACHE, fastmath={"reassoc", "contract"})


@njit(**_JIT)
def interior(pad, size, out_size):
    """Outputs [a, b) of a stride-1 row whose three input columns all lie in the row.

    The input columns of output o are ``o - pad + j``, j < 3; the outputs outside [a, b) are
    the edges.

    Args:
        pad: The padding on the left.
        size: The input row's length.
        out_size: The output row's length.

    Returns:
        ``(a, b)``.
    """
    a = min(max(pad, 0), out_size)
    b = max(a, min(size - 2 + pad, out_size))
    return a, b


@njit(**_JIT)
def rows3(x, top, zero_row):
    """The three input rows top, top+1, top+2 of plane ``x``, padding rows as zeros.

    Args:
        x: The plane (H, W).
        top: The first row (negative, or past the end, in the padding).
        zero_row: W zeros.

    Returns:
        The three rows.
    """
    h = x.shape[0]
    r0 = x[top] if 0 <= top < h else zero_row
    r1 = x[top + 1] if 0 <= top + 1 < h else zero_row
    r2 = x[top + 2] if 0 <= top + 2 < h else zero_row
    return r0, r1, r2


@njit(**_JIT)
def _edge_output(r0, r1, r2, w, col, size):
    """``sum_{i,j} w[i, j] * row_i[col + j]`` over the columns inside [0, size)."""
    acc = w.dtype.type(0)
    for j in range(3):
        c = col + j
        if 0 <= c < size:
            acc += w[0, j] * r0[c] + w[1, j] * r1[c] + w[2, j] * r2[c]
    return acc


@njit(**_JIT)
def row3x3(out, r0, r1, r2, w, pw):
    """``out[o] = sum_{i,j} w[i, j] * r_i[o - pw + j]`` (stride 1, zero outside the rows).

    Args:
        out: The output row, written.
        r0: The first input row.
        r1: The second.
        r2: The third.
        w: The filter (3, 3).
        pw: The padding on the left.
    """
    size, n_out = r0.shape[0], out.shape[0]
    a, b = interior(pw, size, n_out)
    n, c = b - a, a - pw
    if n > 0:
        # Views that start at the column each tap reads, indexed from 0 by the
        # loop counter: no wraparound tests, so LLVM vectorises the loop.
        p0, p1, p2 = r0[c:c + n], r0[c + 1:c + 1 + n], r0[c + 2:c + 2 + n]
        q0, q1, q2 = r1[c:c + n], r1[c + 1:c + 1 + n], r1[c + 2:c + 2 + n]
        t0, t1, t2 = r2[c:c + n], r2[c + 1:c + 1 + n], r2[c + 2:c + 2 + n]
        w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
        w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
        w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
        o = out[a:b]
        for k in range(n):
            o[k] = ((w00 * p0[k] + w01 * p1[k] + w02 * p2[k])
                    + (w10 * q0[k] + w11 * q1[k] + w12 * q2[k])
                    + (w20 * t0[k] + w21 * t1[k] + w22 * t2[k]))
    for k in range(a):
        out[k] = _edge_output(r0, r1, r2, w, k - pw, size)
    for k in range(b, n_out):
        out[k] = _edge_output(r0, r1, r2, w, k - pw, size)


@njit(**_JIT)
def phase_taps(s, pw, size, n_out):
    """Where each tap of a strided row reads: a phase and an offset in it.

    For stride s, tap j reads column ``ow*s - pw + j = (ow + u[j])*s + q[j]``, i.e. element
    ``ow + u[j]`` of phase ``q[j]`` of the row.

    Args:
        s: The stride.
        pw: The padding on the left.
        size: The input row's length.
        n_out: The output row's length.

    Returns:
        ``(q, u, a, b)``, with [a, b) the outputs whose three taps all lie inside the row
        (the interior).
    """
    q = np.empty(3, np.int64)
    u = np.empty(3, np.int64)
    a, b = 0, n_out
    for j in range(3):
        q[j] = (j - pw) % s
        u[j] = (j - pw - q[j]) // s
        count = (size - q[j] + s - 1) // s  # elements in phase q[j]
        a = max(a, -u[j])
        b = min(b, count - u[j])
    a = min(a, n_out)
    return q, u, a, max(a, b)


@njit(**_JIT)
def _deinterleave(row, s, out):
    """``out[q, m] = row[m*s + q]``: the s column phases of a row, each contiguous."""
    for q in range(s):
        o = out[q]
        for m in range((row.shape[0] - q + s - 1) // s):
            o[m] = row[m * s + q]


@njit(**_JIT)
def padded_size(h, wd, ph, pw):
    """The scratch ``correlate3x3_padded`` needs: the zero-padded plane plus 2.

    Args:
        h: The plane's height.
        wd: Its width.
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.

    Returns:
        The number of values.
    """
    return (h + 2 * ph) * (wd + 2 * pw) + 2


@njit(**_JIT)
def _pad_plane(x, ph, pw, xp, ahead, write):
    """xp (flat, row width W + 2 pw) = plane x (H, W) with ph zero rows above and
    below, pw zero columns either side, and zeros after; the planes ``ahead`` (or None)
    prefetched meanwhile, a part of each per row of x."""
    h, wd = x.shape
    wp = wd + 2 * pw
    xp[:] = 0
    for r in range(h):
        prefetch_parts(ahead, r, h, write)
        dst, src = xp[(r + ph) * wp + pw:(r + ph) * wp + pw + wd], x[r]
        for c in range(wd):
            dst[c] = src[c]


@njit(**_JIT)
def _flat_taps(xp, wp, n):
    """The nine runs of n values of padded plane xp that taps (i, j) read:
    ``xp[i*Wp + j:i*Wp + j + n]``, row-major over (i, j)."""
    return (xp[0:n], xp[1:1 + n], xp[2:2 + n],
            xp[wp:wp + n], xp[wp + 1:wp + 1 + n], xp[wp + 2:wp + 2 + n],
            xp[2 * wp:2 * wp + n], xp[2 * wp + 1:2 * wp + 1 + n], xp[2 * wp + 2:2 * wp + 2 + n])


@njit(**_JIT)
def add_nine(acc, s00, s01, s02, s10, s11, s12, s20, s21, s22):
    """``acc (3, 3) +=`` the nine running sums of a weight-gradient plane.

    Args:
        acc: The gradient of the filter (3, 3), added to.
        s00: The sum of tap (0, 0).
        s01: Of tap (0, 1).
        s02: Of tap (0, 2).
        s10: Of tap (1, 0).
        s11: Of tap (1, 1).
        s12: Of tap (1, 2).
        s20: Of tap (2, 0).
        s21: Of tap (2, 1).
        s22: Of tap (2, 2).
    """
    acc[0, 0] += s00
    acc[0, 1] += s01
    acc[0, 2] += s02
    acc[1, 0] += s10
    acc[1, 1] += s11
    acc[1, 2] += s12
    acc[2, 0] += s20
    acc[2, 1] += s21
    acc[2, 2] += s22


@njit(**_JIT)
def correlate_flat(out, xp, w, wp, n):
    """A stride-1 3x3 correlation over a zero-padded flat plane, one vectorised loop.

    ``out[k] = sum_{i,j} w[i, j] * xp[k + i*Wp + j]`` for k < n.

    Args:
        out: The output run, written.
        xp: The zero-padded plane, flat.
        w: The filter (3, 3).
        wp: Wp, the padded plane's row width.
        n: The number of outputs.
    """
    correlate_runs(out, _flat_taps(xp, wp, n), w, n)


@njit(**_JIT)
def correlate_runs(out, taps, w, n):
    """``out[k] = sum_{i,j} w[i, j] * taps[3 i + j][k]`` for k < n.

    Nine runs of n values, the ones that taps (i, j) read, summed row of taps by row of taps
    in one vectorised loop.

    Args:
        out: The output run, written.
        taps: The nine runs, in row-major tap order.
        w: The filter (3, 3).
        n: The number of outputs.
    """
    a0, a1, a2, b0, b1, b2, c0, c1, c2 = taps
    w00, w01, w02 = w[0, 0], w[0, 1], w[0, 2]
    w10, w11, w12 = w[1, 0], w[1, 1], w[1, 2]
    w20, w21, w22 = w[2, 0], w[2, 1], w[2, 2]
    o = out[:n]
    for k in range(n):
        o[k] = ((w00 * a0[k] + w01 * a1[k] + w02 * a2[k])
                + (w10 * b0[k] + w11 * b1[k] + w12 * b2[k])
                + (w20 * c0[k] + w21 * c1[k] + w22 * c2[k]))


@njit(**_JIT)
def correlate3x3_padded(y, x, w, ph, pw, xp, out, ahead=None, write=False):
    """3x3 cross-correlation of a plane, stride 1, through a zero-padded copy of the plane.

    With the padding materialised (``xp``, row width ``Wp = W + 2 pw``) every output has all
    nine taps, so the whole plane is one loop over flat positions ``q = r*Wp + c``,
    ``out[q] = sum_{i,j} w[i, j] * xp[q + i*Wp + j]``, with no edge cases; the last ``2 pw``
    positions of each row are thrown away when ``out`` is copied into y.

    Args:
        y: The output plane (Ho, Wo), written.
        x: The input plane (H, W).
        w: The filter (3, 3).
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.
        xp: Scratch of ``padded_size(H, W, ph, pw)``.
        out: Scratch of ``Ho * Wp``.
        ahead: Planes to prefetch meanwhile, a tuple of 1-D contiguous arrays (a part of
            each per row of x: ``..prefetch.prefetch_parts``); or None.
        write: Prefetch them for writing.
    """
    h, wd = x.shape
    ho, wo = y.shape
    wp = wd + 2 * pw
    _pad_plane(x, ph, pw, xp, ahead, write)
    correlate_flat(out, xp, w, wp, ho * wp)
    for r in range(ho):
        dst, src = y[r], out[r * wp:r * wp + wo]
        for c in range(wo):
            dst[c] = src[c]


@njit(**_JIT)
def weight_scratch_size(ho, wd, pw):
    """The scratch ``weight3x3_padded`` needs: Ho + 4 rows of the padded width.

    Args:
        ho: The output plane's height.
        wd: The input plane's width.
        pw: The padding on the left and right.

    Returns:
        The number of values.
    """
    return (ho + 4) * (wd + 2 * pw)


@njit(**_JIT_REDUCE)
def weight3x3_padded(acc, gy, x, ph, pw, xp, gp, ahead=None, write=False):
    r"""``acc (3, 3) += sum_{oh, ow} gy[oh, ow] * x[oh - ph + i, ow - pw + j]`` (stride 1).

    The sum runs over the same zero-padded flat plane as ``correlate3x3_padded`` (row width
    Wp). With gy laid out at the padded row width after two rows of zeros (``gp``, see
    ``weight_scratch_size``; zeros in the ``2 pw`` extra columns and after), tap (i, j) is

        acc[i, j] += sum_q gp[q + (2 - i)*Wp] * xp[q + j],

    nine dot products over one run. Each step loads three values of xp and three of gp and
    does nine multiply-adds with them (against ten loads for the nine taps written as
    ``sum_q gp[q] * xp[q + i*Wp + j]``), which made it faster (figures: docs/kernels.md,
    "Depthwise"). The sums are
    vectorised as SIMD partial sums in acc's dtype.

    Args:
        acc: The filter's gradient (3, 3), added to.
        gy: $\partial L / \partial y$ of the plane (Ho, Wo).
        x: The input plane (H, W).
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.
        xp: Scratch of ``padded_size``.
        gp: Scratch of ``weight_scratch_size``.
        ahead: Planes to prefetch meanwhile, a tuple of 1-D contiguous arrays (a part of
            each per row of x: ``..prefetch.prefetch_parts``); or None.
        write: Prefetch them for writing.
    """
    h, wd = x.shape
    ho, wo = gy.shape
    wp = wd + 2 * pw
    _pad_plane(x, ph, pw, xp, ahead, write)
    run = (ho + 2) * wp
    g = gp[:run + 2 * wp]
    g[:] = 0
    for r in range(ho):
        dst, src = g[(r + 2) * wp:(r + 2) * wp + wo], gy[r]
        for c in range(wo):
            dst[c] = src[c]
    x0, x1, x2 = xp[0:run], xp[1:1 + run], xp[2:2 + run]
    g0, g1, g2 = g[2 * wp:2 * wp + run], g[wp:wp + run], g[0:run]  # rows i = 0, 1, 2
    zero = acc.dtype.type(0)  # not acc[0, 0] * 0: Numba types float32 * int as float64
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = zero
    for q in range(run):
        a, b, c = x0[q], x1[q], x2[q]
        u, v, w = g0[q], g1[q], g2[q]
        s00 += u * a
        s01 += u * b
        s02 += u * c
        s10 += v * a
        s11 += v * b
        s12 += v * c
        s20 += w * a
        s21 += w * b
        s22 += w * c
    add_nine(acc, s00, s01, s02, s10, s11, s12, s20, s21, s22)


@njit(**_JIT)
def correlate3x3_strided(y, x, w, s, ph, pw, zero_row, row_buf):
    """3x3 cross-correlation of a plane at stride s > 1: each row at stride 1, then subsampled.

    Each output row is computed at stride 1 (contiguous, vectorised) into ``row_buf``, then
    every s-th value is kept.

    Args:
        y: The output plane (Ho, Wo), written.
        x: The input plane (H, W).
        w: The filter (3, 3).
        s: The stride, > 1.
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.
        zero_row: W zeros.
        row_buf: Scratch of ``(Wo - 1) * s + 1`` values.
    """
    ho, wo = y.shape
    for oh in range(ho):
        r0, r1, r2 = rows3(x, oh * s - ph, zero_row)
        row3x3(row_buf, r0, r1, r2, w, pw)
        yr = y[oh]
        for ow in range(wo):
            yr[ow] = row_buf[ow * s]


@njit(**_JIT_REDUCE)
def weight3x3_strided(acc, gy, x, s, ph, pw, zero_row, phases):
    r"""``acc (3, 3) += sum_{oh, ow} gy[oh, ow] * x[oh*s - ph + i, ow*s - pw + j]``, stride s > 1.

    Without dilating gy: tap j reads column ``(ow + u)*s + q`` of its row
    (``q = (j - pw) mod s``), i.e. element ``ow + u`` of the row's phase q, so each input
    row is split once into its s contiguous phases and every tap is again a contiguous dot
    product with the gy row.

    Args:
        acc: The filter's gradient (3, 3), added to.
        gy: $\partial L / \partial y$ of the plane (Ho, Wo).
        x: The input plane (H, W).
        s: The stride, > 1.
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.
        zero_row: W zeros.
        phases: Scratch (3, s, at least W / s).
    """
    wd = x.shape[1]
    ho, wo = gy.shape
    qs, us, a, b = phase_taps(s, pw, wd, wo)
    n = b - a
    zero = acc.dtype.type(0)  # not acc[0, 0] * 0: Numba types float32 * int as float64
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = zero
    for oh in range(ho):
        r0, r1, r2 = rows3(x, oh * s - ph, zero_row)
        g = gy[oh]
        if n > 0:
            _deinterleave(r0, s, phases[0])
            _deinterleave(r1, s, phases[1])
            _deinterleave(r2, s, phases[2])
            gs = g[a:b]
            p0 = phases[0, qs[0], a + us[0]:b + us[0]]
            p1 = phases[0, qs[1], a + us[1]:b + us[1]]
            p2 = phases[0, qs[2], a + us[2]:b + us[2]]
            q0 = phases[1, qs[0], a + us[0]:b + us[0]]
            q1 = phases[1, qs[1], a + us[1]:b + us[1]]
            q2 = phases[1, qs[2], a + us[2]:b + us[2]]
            t0 = phases[2, qs[0], a + us[0]:b + us[0]]
            t1 = phases[2, qs[1], a + us[1]:b + us[1]]
            t2 = phases[2, qs[2], a + us[2]:b + us[2]]
            for k in range(n):
                gk = gs[k]
                s00 += gk * p0[k]
                s01 += gk * p1[k]
                s02 += gk * p2[k]
                s10 += gk * q0[k]
                s11 += gk * q1[k]
                s12 += gk * q2[k]
                s20 += gk * t0[k]
                s21 += gk * t1[k]
                s22 += gk * t2[k]
        for t in range(a + wo - b):  # the edge columns 0..a-1, then b..wo-1
            ow = t if t < a else b + t - a
            col, gk = ow * s - pw, g[ow]
            if 0 <= col < wd:
                s00 += gk * r0[col]
                s10 += gk * r1[col]
                s20 += gk * r2[col]
            if 0 <= col + 1 < wd:
                s01 += gk * r0[col + 1]
                s11 += gk * r1[col + 1]
                s21 += gk * r2[col + 1]
            if 0 <= col + 2 < wd:
                s02 += gk * r0[col + 2]
                s12 += gk * r1[col + 2]
                s22 += gk * r2[col + 2]
    add_nine(acc, s00, s01, s02, s10, s11, s12, s20, s21, s22)


@njit(**_JIT)
def scatter3x3_strided_plane(gx, gy, w, s, ph, pw, phases):
    r"""The input gradient of a 3x3 correlation with stride s > 1, without dilating gy.

    Input column ``c = m*s + q`` (phase q) receives tap j of output column
    ``ow = m + (q + pw - j) / s`` when that divides exactly; so each phase of a gx row is a
    few contiguous multiply-adds of gy rows, gathered in ``phases`` and interleaved into the
    row at the end.

    Args:
        gx: The input gradient plane (H, W), written.
        gy: $\partial L / \partial y$ of the plane (Ho, Wo).
        w: The filter (3, 3).
        s: The stride, > 1.
        ph: The padding at the top and bottom.
        pw: The padding on the left and right.
        phases: Scratch (s, at least W / s).
    """
    h, wd = gx.shape
    ho, wo = gy.shape
    for r in range(h):
        phases[:] = 0
        for i in range(3):
            t = r + ph - i
            if t < 0 or t % s != 0 or t // s >= ho:
                continue
            g = gy[t // s]
            for q in range(s):
                o = phases[q]
                count = (wd - q + s - 1) // s
                for j in range(3):
                    if (q + pw - j) % s != 0:
                        continue
                    u = (q + pw - j) // s
                    lo, hi = max(0, -u), min(count, wo - u)
                    if hi <= lo:
                        continue
                    wij = w[i, j]
                    os, gs = o[lo:hi], g[lo + u:hi + u]
                    for k in range(hi - lo):
                        os[k] += wij * gs[k]
        row = gx[r]
        for q in range(s):
            o = phases[q]
            for m in range((wd - q + s - 1) // s):
                row[m * s + q] = o[m]
