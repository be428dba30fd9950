"""benchmarks/onnx_profile.py: a short raced profile names every step of the frozen model
and every layer of onnxruntime's, with positive times, and maps ONNX node names to layers."""
import numba

from benchmarks import onnx_profile


def test_nodes_map_to_the_model_layers():
    assert onnx_profile.layer_of("features.12.conv.0.2_nchwc") == "features.12"
    assert onnx_profile.layer_of("classifier.1") == "classifier"
    assert onnx_profile.layer_of("pool_nchwc") == "pool"
    assert onnx_profile.layer_of("ReorderOutput") == "other"


def test_a_short_profile(capsys):
    before = numba.get_num_threads()
    try:
        rows, whole = onnx_profile.main(["--size", "32", "--repeats", "2", "--threads", "1",
                                         "--pause-ms", "0"])
    finally:
        numba.set_num_threads(before)
    names = [r[0] for r in rows]
    assert names[:3] == ["features.0-1", "features.2", "features.3"]
    assert "features.18" in names and names.index("pool") == names.index("features.18") + 1
    ours = dict((r[0], r[1]) for r in rows)
    theirs = dict((r[0], r[2]) for r in rows)
    assert all(ours[n] > 0 for n in names if n != "other")
    assert all(theirs[n] > 0 for n in ["features.0-1", "features.2", "features.18", "classifier"])
    assert whole["tinymbv2"] > 0 and whole["onnxruntime"] > 0
    out = capsys.readouterr().out
    assert "whole call" in out and out.count("features.") >= 18
