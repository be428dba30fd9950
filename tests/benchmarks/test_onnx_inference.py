"""benchmarks/onnx_inference.py: a short run times the four contestants after checking that
they compute the same logits (the frozen and the fused tinymbv2 the same bits)."""
import numba
import numpy as np

from benchmarks import onnx_inference


def test_short_run_times_four_contestants(capsys):
    before = numba.get_num_threads()
    try:
        results = onnx_inference.main(["--batches", "2", "--size", "32", "--repeats", "1",
                                       "--warmup", "0", "--threads", "1"])
    finally:
        numba.set_num_threads(before)
    assert list(results) == [2]
    assert list(results[2]) == ["onnxruntime", "tinymbv2", "tinymbv2 fused", "pytorch"]
    assert all(s > 0 for s in results[2].values())
    assert capsys.readouterr().out.count("x onnxruntime") == 4


def test_the_contestants_agree(tmp_path):
    calls = onnx_inference.contestants(1, 1, tmp_path, size=32)
    outs = [np.asarray(fn()) for fn in calls.values()]
    assert outs[0].shape == (1, 1000)
    for other in outs[1:]:
        np.testing.assert_allclose(other, outs[0], rtol=1e-3, atol=1e-4)
    assert np.array_equal(outs[1], outs[2])  # frozen and fused: the same kernels
