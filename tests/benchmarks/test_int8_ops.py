"""benchmarks/int8_ops.py: a short run times both contestants on the six layers, and the
int8 layers compute what the reference set does."""
import numba
import numpy as np

from benchmarks import int8_ops


def test_short_run_times_six_layers(capsys):
    before = numba.get_num_threads()
    try:
        rows = int8_ops.main(["--size", "32", "--batch", "1", "--repeats", "2", "--warmup", "0",
                              "--threads", "1"])
    finally:
        numba.set_num_threads(before)
    assert list(rows) == [name for name, *_ in int8_ops.layers(32)] + ["all six"]
    assert all(t > 0 for r in rows.values() for t in r.values())
    out = capsys.readouterr().out
    assert "batch 1" in out and out.count("\n") == 2 + 7 + 1 - 1


def test_the_int8_contestants_match_the_reference():
    for _, kind, c, co, hw, stride, relu6 in int8_ops.layers(32):
        ys = [int8_ops.contestants(kind, c, co, hw, stride, relu6, 2, np.random.default_rng(0),
                                   kernels)["int8"]() for kernels in ("numba", "reference")]
        assert ys[0].dtype == np.uint8
        np.testing.assert_array_equal(*ys)
