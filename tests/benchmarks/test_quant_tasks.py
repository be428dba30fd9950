"""benchmarks/quant_tasks.py on two short runs (a segmenter, a detector): every row scored,
the float32 row the run's own test score, and the table written as JSON."""
import json

import pytest

from benchmarks import quant_tasks
from tinymbv2.cli import main as cli

ROWS = ["float32", "int8 per-tensor", "int8 per-channel", "int8 per-channel + QAT (2 steps)",
        "onnxruntime quantize_static"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant_tasks")
    for task in ("segment", "detect"):
        assert cli(["train", "--task", task, "--dataset", "mnist-scenes", "--train-scenes", "48",
                    "--image-size", "64", "--epochs", "1", "--width", "0.35", "--batch-size", "16",
                    "--no-progress", "--out", str(folder / task)]) == 0
    return folder


def test_every_row_is_scored_and_float32_is_the_runs_own_score(runs, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "q.json"
    results = quant_tasks.main(["--segment", str(runs / "segment"), "--detect", str(runs / "detect"),
                                "--qat-steps", "2", "--json", str(out)])
    segment, detect = results[str(runs / "segment")], results[str(runs / "detect")]
    assert (segment["task"], detect["task"]) == ("segment", "detect")
    for result, names in ((segment, ["miou", "pixel_accuracy"]), (detect, ["map_50", "map"])):
        assert list(result["rows"]) == ROWS
        for scores in result["rows"].values():
            assert list(scores) == names and all(0.0 <= s <= 1.0 for s in scores.values())
    seg_metrics = json.loads((runs / "segment" / "metrics.json").read_text())
    det_metrics = json.loads((runs / "detect" / "metrics.json").read_text())
    assert segment["rows"]["float32"]["miou"] == pytest.approx(seg_metrics["test_miou"], abs=1e-3)
    assert detect["rows"]["float32"]["map_50"] == pytest.approx(det_metrics["test_map_50"], abs=1e-3)
    assert json.loads(out.read_text()) == results


def test_a_classifier_run_is_refused(tmp_path):
    run = tmp_path / "digits"
    assert cli(["train", "--dataset", "digits", "--width", "0.35", "--epochs", "1", "--no-progress",
                "--out", str(run)]) == 0
    with pytest.raises(ValueError, match="expected a segmentation or detection run, got task "
                                         "'classify'"):
        quant_tasks.main(["--segment", str(run)])
