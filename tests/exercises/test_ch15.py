"""Chapter 15's checks answer common wrong answers with the hint meant for them (no GPU needed)."""
import math

import numpy as np

from tinymbv2.exercises import check_dw_thread, check_launch_geometry, check_one_hot


def _geometry(x, w, stride, padding):
    (_, c, h, wd), (kh, kw) = x.shape, w.shape[2:]
    return c, h, wd, kh, kw, (h + 2 * padding[0] - kh) // stride[0] + 1, (wd + 2 * padding[1] - kw) // stride[1] + 1


def _dw_thread(x, w, idx, stride, padding, decode="ow fastest", bounds="skip", offset=True):
    c_, h_, w_, kh, kw, ho, wo = _geometry(x, w, stride, padding)
    if decode == "ow fastest":
        ow, t = idx % wo, idx // wo
        oh, t = t % ho, t // ho
    else:
        oh, t = idx % ho, idx // ho
        ow, t = t % wo, t // wo
    c, n = t % c_, t // c_
    acc = 0.0
    for i in range(kh):
        for j in range(kw):
            h = oh * stride[0] - (padding[0] if offset else 0) + i
            v = ow * stride[1] - (padding[1] if offset else 0) + j
            inside = 0 <= h < h_ and 0 <= v < w_ if bounds == "skip" else h < h_ and v < w_
            if inside:
                acc += w[c, 0, i, j] * x[n, c, h, v]
    return acc


def test_dw_thread_hints():
    assert check_dw_thread(_dw_thread).passed
    wraps = check_dw_thread(lambda *a: _dw_thread(*a, bounds="upper only"))
    assert "a negative index reads the far end in Python" in wraps.message
    swapped = check_dw_thread(lambda *a: _dw_thread(*a, decode="oh fastest"))
    assert "thread 6 computes y[n=0, c=0, oh=0, ow=6] = 3.58204; you gave 3.64131" in swapped.message
    assert "ow varies fastest" in swapped.message
    no_offset = check_dw_thread(lambda *a: _dw_thread(*a, offset=False))
    assert "you left out the padding" in no_offset.message


def _right_geometry(total, block=256, max_grid=2**20):
    grid = min(-(-total // block), max_grid)
    return grid, (-(-total // (grid * block)) if grid else 0)


def test_launch_geometry_hints():
    assert check_launch_geometry(_right_geometry).message == "correct (8 cases)"

    def floor_grid(total, block=256, max_grid=2**20):
        grid = min(total // block, max_grid)
        return grid, (-(-total // (grid * block)) if grid else 0)
    assert "round the blocks up (ceil), not down" in check_launch_geometry(floor_grid).message

    def uncapped(total, block=256, max_grid=2**20):
        return -(-total // block), 1 if total else 0
    assert "above the cap 1,048,576" in check_launch_geometry(uncapped).message

    def trips_per_block(total, block=256, max_grid=2**20):
        grid = min(-(-total // block), max_grid)
        return grid, (math.ceil(total / grid) if grid else 0)
    assert "not grid" in check_launch_geometry(trips_per_block).message


def test_one_hot_hints():
    def right(labels, k, xp):
        out = xp.zeros((labels.shape[0], k), dtype=xp.float32)
        out[xp.arange(labels.shape[0]), labels] = 1
        return out
    assert check_one_hot(right).passed
    assert check_one_hot(lambda labels, k, xp: xp.eye(k, dtype=xp.float32)[labels]).passed

    host = check_one_hot(lambda labels, k, xp: np.eye(k, dtype=np.float32)[labels])
    assert "xp = a stand-in for CuPy" in host.message and "not an array of xp" in host.message
    mixed = check_one_hot(lambda labels, k, xp: (labels[:, None] == np.arange(k)).astype(np.float32))
    assert "a NumPy (host) array met a device array" in mixed.message
    wrong_dtype = check_one_hot(lambda labels, k, xp: xp.eye(k)[labels])
    assert wrong_dtype.message.endswith("the dtype: you gave 'float64', expected 'float32'")
