"""benchmarks/ddp_scaling.py --quick: the measured step times feed every table, weak scaling
keeps the batch and strong scaling splits it, overlap never makes a step slower, and the JSON
holds what was printed."""
import json

from benchmarks import ddp_scaling


def test_quick_run_models_both_links_and_both_scalings(tmp_path, capsys):
    out = tmp_path / "s.json"
    result = ddp_scaling.main(["--quick", "--json", str(out)])
    assert result["gradient_bytes"] == 4 * 3_504_872          # MobileNetV2-1.0's parameters
    assert set(result["measured"]) == {1, 4}
    tables = result["tables"]
    for link in ("10 Gbit/s", "100 Gbit/s"):
        weak = {o: next(v for k, v in tables.items() if k.startswith(link) and "weak" in k
                        and o in k) for o in ("overlapped", "no overlap")}
        strong = next(v for k, v in tables.items() if k.startswith(link) and "strong" in k)
        assert [r["workers"] for r in weak["overlapped"]] == [8, 64, 512]
        assert all(r["per_worker_batch"] == 32 for r in weak["overlapped"])
        assert [r["per_worker_batch"] for r in strong] == [128, 16, 2]
        for a, b in zip(weak["overlapped"], weak["no overlap"]):
            assert a["step_s"] <= b["step_s"] and 0 < b["efficiency"] <= a["efficiency"] <= 1
        assert tables[f"{link} best workers"] >= 1
    assert json.loads(out.read_text())["gradient_bytes"] == result["gradient_bytes"]
    assert "strong scaling of a global batch of 1024 is fastest at" in capsys.readouterr().out
