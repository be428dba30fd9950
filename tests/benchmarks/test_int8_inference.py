"""benchmarks/int8_inference.py: a short run checks that Int8Net's classes agree with
onnxruntime's on the QDQ file, then times the three contestants."""
import numba
import numpy as np

from benchmarks import int8_inference


def test_short_run_checks_agreement_then_times_three_contestants(capsys):
    before = numba.get_num_threads()
    try:
        results = int8_inference.main(["--batches", "2", "--size", "32", "--calib", "2",
                                       "--check", "4", "--repeats", "1", "--warmup", "0",
                                       "--threads", "1"])
    finally:
        numba.set_num_threads(before)
    assert list(results) == ["agreement", 2]
    assert results["agreement"] >= 0.9
    assert list(results[2]) == ["int8net", "float32", "onnxruntime-int8"]
    assert all(s > 0 for s in results[2].values())
    out = capsys.readouterr().out
    assert f"equals onnxruntime's on {results['agreement']:.3f} of 4 images" in out
    assert out.count("x float32") == 3


def test_int8net_runs_the_calibrated_view_in_integers():
    """The benchmark's int8 contestant is the view's network: the same classes as the view's
    float simulation on most images, and the float32 contestant is the frozen float model."""
    import tinymbv2
    from tinymbv2.autograd import Tensor
    net, int8, qnet = int8_inference.build(32, 2)
    x = int8_inference.images(6, 32, seed=3)
    with tinymbv2.no_grad():
        view = qnet(Tensor(x)).data
    floats = net(x)
    ours = int8(x)
    assert ours.shape == floats.shape == (6, 1000) and ours.dtype == np.float32
    assert np.mean(ours.argmax(1) == view.argmax(1)) >= 0.5
