"""Checks for the exercises of chapter 15. On the GPU with CuPy.

Every check runs without a GPU (and without CuPy); where CuPy sees a GPU, ``check_one_hot``
also runs the answer on real CuPy arrays.

* ``check_dw_thread``: what one GPU thread of the depthwise forward kernel computes;
* ``check_launch_geometry``: the blocks of a grid-stride launch, and the loop's trips;
* ``check_one_hot``: code that runs on either array module, given as ``xp``.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernels import kernel_set
from .checking import Hint, exercise, expect_close, expect_equal

__all__ = ["check_dw_thread", "check_launch_geometry", "check_one_hot"]


def _decode(idx, shape):
    """(n, c, oh, ow) of flat index ``idx`` in an (N, C, Ho, Wo) array, row-major."""
    return tuple(int(i) for i in np.unravel_index(idx, shape))


def _window_sum(x, w, n, c, oh, ow, stride, padding, wrap=False, shift=True):
    """One output of a depthwise conv, as the kernel computes it; ``wrap``: Python's negative
    indices read from the far end (a slip); ``shift=False``: the padding offset forgotten."""
    (sh, sw), (ph, pw) = stride, padding
    kh, kw = w.shape[2:]
    h_in, w_in = x.shape[2:]
    h0, w0 = oh * sh - (ph if shift else 0), ow * sw - (pw if shift else 0)
    acc = 0.0
    for i in range(kh):
        for j in range(kw):
            h, v = h0 + i, w0 + j
            inside = 0 <= h < h_in and 0 <= v < w_in
            if inside or (wrap and -h_in <= h < h_in and -w_in <= v < w_in):
                acc += w[c, 0, i, j] * x[n, c, h, v]
    return acc


@exercise
def check_dw_thread(dw_thread) -> int:
    """``dw_thread(x, w, idx, stride, padding)`` must return the output value that thread
    ``idx`` of the depthwise forward kernel computes: decode ``idx`` into ``(n, c, oh, ow)`` of
    the output (row-major, ``ow`` fastest), then sum the ``kh x kw`` window that starts at
    ``(oh * sh - ph, ow * sw - pw)``, skipping taps outside the input (the zero padding).

    Compared, to 1e-12, with the reference kernels' ``depthwise_conv2d_forward`` at the first
    and last index, at corners and edges (where the window leaves the input) and at random
    indices, for stride 1 and 2, padding 1 and 0, a non-square input and a 5x3 filter. Hints
    name the output element the thread should compute, and the slips of a negative index
    (Python reads the far end; the kernel skips it) and a forgotten padding offset.

    Args:
        dw_thread: your function, ``dw_thread(x, w, idx, stride, padding)`` -> the float
            that thread ``idx`` writes.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    ref = kernel_set("reference")
    g = np.random.default_rng(15)
    setups = [((2, 3, 5, 7), (3, 3), (1, 1), (1, 1)), ((1, 4, 9, 6), (3, 3), (2, 2), (1, 1)),
              ((2, 2, 6, 6), (3, 3), (1, 1), (0, 0)), ((1, 3, 8, 7), (5, 3), (2, 1), (2, 1))]
    cases = 0
    for x_shape, (kh, kw), stride, padding in setups:
        x = g.standard_normal(x_shape)
        w = g.standard_normal((x_shape[1], 1, kh, kw))
        y = ref.depthwise_conv2d_forward(x, w, stride, padding)
        size = y.size
        picks = {0, size - 1, y.shape[3] - 1, y.shape[2] * y.shape[3] - 1,
                 (y.shape[2] - 1) * y.shape[3]} | set(int(i) for i in g.integers(0, size, 6))
        for idx in sorted(picks):
            n, c, oh, ow = _decode(idx, y.shape)
            want = float(y[n, c, oh, ow])
            got = dw_thread(x.copy(), w.copy(), idx, stride, padding)
            cases += 1
            try:
                got = float(got)
            except (TypeError, ValueError):
                raise Hint(f"thread {idx} (x {x_shape}, stride {stride}, padding {padding}): "
                           f"expected one number, got {type(got).__name__}") from None
            if abs(got - want) <= 1e-12 * max(1.0, abs(want)):
                continue
            case = (f"x {x_shape}, w {w.shape}, stride {stride}, padding {padding}: thread {idx} "
                    f"computes y[n={n}, c={c}, oh={oh}, ow={ow}]")
            wrapped = _window_sum(x, w, n, c, oh, ow, stride, padding, wrap=True)
            if abs(got - wrapped) <= 1e-9 and abs(wrapped - want) > 1e-9:
                raise Hint(f"{case}: its window reaches outside the input, and a negative index "
                           f"reads the far end in Python: skip taps outside 0 <= h < H and "
                           f"0 <= w < W, as the kernel's `continue` does")
            unshifted = _window_sum(x, w, n, c, oh, ow, stride, padding, shift=False)
            if abs(got - unshifted) <= 1e-9 and abs(unshifted - want) > 1e-9:
                raise Hint(f"{case}: the window starts at (oh * sh - ph, ow * sw - pw); you "
                           f"left out the padding")
            raise Hint(f"{case} = {want:.6g}; you gave {got:.6g} (idx = ((n * C + c) * Ho + "
                       f"oh) * Wo + ow: ow varies fastest)")
    return cases


@exercise
def check_launch_geometry(launch_geometry) -> int:
    """``launch_geometry(total, block=256, max_grid=2**20)`` must return ``(grid, trips)``
    for a grid-stride kernel over ``total`` elements: ``grid``, the number of blocks,
    enough for one thread per element but capped at ``max_grid`` (0 when there is nothing to
    do); ``trips``, how many times the busiest thread goes round the loop
    (``ceil(total / (grid * block))``, 0 for no elements). The library's ``launch``
    (``tinymbv2/kernels/cupy/common.py``) computes the grid this way.

    Cases: 0, 1, a full block, one more, a batch of images, the cap reached, other block sizes.

    Args:
        launch_geometry: your function,
            ``launch_geometry(total, block=256, max_grid=2**20)`` -> ``(grid, trips)``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    cases = [(0, 256, 1 << 20), (1, 256, 1 << 20), (256, 256, 1 << 20), (257, 256, 1 << 20),
             (64 * 144 * 56 * 56, 256, 1 << 20), ((1 << 28) + 5, 256, 1 << 20),
             (10_000, 128, 16), (1000, 1024, 1 << 20)]
    for total, block, max_grid in cases:
        grid = min(-(-total // block), max_grid)
        trips = -(-total // (grid * block)) if grid else 0
        case = f"launch_geometry({total:,}, block={block}, max_grid={max_grid:,})"
        got = launch_geometry(total, block, max_grid)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise Hint(f"{case}: expected a pair (grid, trips), got {got!r}")
        g, t = (int(v) for v in got)
        if g != grid:
            if g * block < total and g < max_grid and g == total // block:
                raise Hint(f"{case}: grid {g} gives {g * block:,} threads for {total:,} "
                           f"elements: round the blocks up (ceil), not down")
            if g > max_grid:
                raise Hint(f"{case}: grid {g:,} is above the cap {max_grid:,}: the grid-stride "
                           f"loop lets a capped grid cover any size")
            expect_equal(g, grid, f"{case}: the grid")
        if t != trips and grid and t == math.ceil(total / grid):
            raise Hint(f"{case}: trips {t}: each trip of the loop covers grid * block = "
                       f"{grid * block:,} elements, not grid")
        expect_equal(t, trips, f"{case}: the trips of the busiest thread")
    return len(cases)


class _DeviceArray(np.ndarray):
    """An array "on another device", as a CuPy array is: what ``xp`` makes, and what any
    arithmetic on it gives, is a ``_DeviceArray``; combining one with a host (NumPy) array
    raises ``TypeError``, as CuPy does."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for a in inputs + tuple(kwargs.get("out", ())):
            if type(a) is np.ndarray and a.ndim > 0:
                raise TypeError(f"{ufunc.__name__}: a NumPy (host) array met a device array; "
                                f"make every array with xp, not np")
        plain = [a.view(np.ndarray) if isinstance(a, _DeviceArray) else a for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(a.view(np.ndarray) if isinstance(a, _DeviceArray) else a
                                  for a in kwargs["out"])
        result = getattr(ufunc, method)(*plain, **kwargs)
        if isinstance(result, tuple):
            return tuple(r.view(_DeviceArray) if isinstance(r, np.ndarray) else r for r in result)
        return result.view(_DeviceArray) if isinstance(result, np.ndarray) else result


class _FakeDevice:
    """A stand-in for CuPy on a machine without a GPU: NumPy's functions, returning
    ``_DeviceArray`` where NumPy returns an array."""

    __name__ = "fake_cupy"

    def __getattr__(self, name):
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, type):
            return attr

        def on_device(*args, **kwargs):
            out = attr(*args, **kwargs)
            return out.view(_DeviceArray) if isinstance(out, np.ndarray) else out

        return on_device

    def asnumpy(self, a):
        return np.asarray(a).view(np.ndarray)


def _real_cupy():
    """CuPy when it is installed and sees a GPU, else None."""
    try:
        import cupy

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # no CuPy, or no driver: no GPU here
        return None


@exercise
def check_one_hot(one_hot) -> int:
    """``one_hot(labels, num_classes, xp)`` must return the ``(N, num_classes)`` float32 array
    with a 1 at ``[i, labels[i]]`` and 0 elsewhere, made with the array module ``xp`` (NumPy or
    CuPy) that ``labels`` belong to, so that the result lives on the same device.

    Run with ``xp = numpy``, with a stand-in for CuPy (its arrays refuse to mix with NumPy's,
    and the result must be one of its arrays: an array made with ``np`` is on the wrong
    device), and with CuPy itself where a GPU is present. Cases: several labels, a single
    one, every class once, an empty batch.

    Args:
        one_hot: your function, ``one_hot(labels, num_classes, xp)`` -> an
            ``(N, num_classes)`` float32 array of ``xp``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    modules = [("numpy", np, np.asarray, np.ndarray), ("a stand-in for CuPy", _FakeDevice(),
                                                       lambda a: a.view(np.ndarray), _DeviceArray)]
    cupy = _real_cupy()
    if cupy is not None:
        modules.append(("CuPy on the GPU", cupy, cupy.asnumpy, cupy.ndarray))
    label_sets = [([3, 0, 2, 2, 1], 4), ([7], 10), (list(range(6)), 6), ([], 3)]
    cases = 0
    for where, xp, to_host, kind in modules:
        for labels, k in label_sets:
            case = f"xp = {where}, labels {labels}, num_classes {k}"
            dev_labels = xp.asarray(np.array(labels, dtype=np.int64))
            try:
                got = one_hot(dev_labels, k, xp)
            except TypeError as exc:
                if "met a device array" in str(exc):
                    raise Hint(f"{case}: {exc}") from None
                raise
            if not isinstance(got, kind):
                raise Hint(f"{case}: your result is a {type(got).__module__}."
                           f"{type(got).__name__}, not an array of xp: make it with xp "
                           f"(xp.zeros, xp.eye, xp.arange), so it lives where the labels live")
            expect_equal(str(got.dtype), "float32", f"{case}: the dtype")
            want = np.eye(k, dtype=np.float32)[np.array(labels, dtype=np.int64)]
            expect_close(to_host(got), want, case, rtol=0, atol=0)
            cases += 1
    return cases
