"""benchmarks/quant_accuracy.py: a short run trains the ReLU6 and the ReLU network, scores
every scheme for both and writes them, and a second run reads the same runs back."""
import json

from benchmarks import quant_accuracy


def test_short_run_scores_both_networks_and_reads_runs_back(tmp_path, capsys):
    out = tmp_path / "q"
    table = quant_accuracy.main(["--dataset", "digits", "--width", "0.35", "--epochs", "1",
                                 "--lr", "0.1", "--out", str(out), "--json", str(tmp_path / "q.json")])
    assert list(table) == ["relu6", "relu"]
    names = ["float32", *(f"{w} {o}" for w, o in quant_accuracy.SCHEMES),
             "per_channel minmax, in int8", "onnxruntime quantize_static", "per_channel minmax + QAT"]
    for scores in table.values():
        assert list(scores) == names and all(0.0 <= s <= 1.0 for s in scores.values())
    assert json.loads((tmp_path / "q.json").read_text()) == table
    assert "per_channel mse" in capsys.readouterr().out
    again = quant_accuracy.main(["--runs", str(out / "relu6"), str(out / "relu")])
    for act in table:  # the same runs, calibration and QAT seed: the same scores
        assert again[act] == table[act]
