"""benchmarks.torch_first: the race runs end to end in a tiny configuration, and its table
is made of what the processes reported."""
import statistics

import pytest

pytest.importorskip("torch")  # two of the three process kinds import it

from benchmarks import torch_first  # noqa: E402


def test_the_race_runs_each_process_kind_and_reports_its_steps(capsys):
    tables = torch_first.main(["--rounds", "1", "--steps", "2", "--warmup", "0", "--batch", "2",
                               "--background", "none"])
    rows = tables["none"]
    assert [r[0] for r in rows] == list(torch_first.PROCESS_KINDS)
    base = rows[0][1]
    for name, mid, ratio, medians, layer, passive in rows:
        assert len(medians) == 1 and mid == medians[0] > 0
        assert ratio == pytest.approx(mid / base)
        assert layer in ("omp", "workqueue", "tbb") and passive is True  # torch first too
    printed = capsys.readouterr().out
    for name, mid, ratio, *_ in rows:
        assert f"{name:<20}{mid:>11.1f}{ratio:>12.2f}" in printed


def test_summarise_takes_the_median_of_each_process_then_over_rounds():
    def report(*ms, layer="omp"):
        return dict(times=[m / 1e3 for m in ms], layer=layer, passive=True)

    reports = {"no torch": [report(100, 110, 300), report(120, 90, 130)],
               "torch first": [report(200, 220, 210), report(260, 240, 250)],
               "torch first + op": [report(150), report(130, layer="workqueue")]}
    rows = {r[0]: r for r in torch_first.summarise(reports)}
    assert rows["no torch"][3] == pytest.approx([110, 120])
    assert rows["no torch"][1:3] == pytest.approx((115, 1.0))
    assert rows["torch first"][1:3] == pytest.approx((230, 230 / 115))
    assert rows["torch first + op"][1] == pytest.approx(statistics.median([150, 130]))
    assert rows["torch first + op"][4] == "workqueue"  # the last round's


def test_a_spinning_background_is_started_and_stopped():
    load = torch_first.start_background("spin", None)
    try:
        assert load.poll() is None  # running
    finally:
        load.kill()
        load.wait()
    assert torch_first.start_background("none", None) is None
    with pytest.raises(ValueError, match="unknown background 'busy'"):
        torch_first.start_background("busy", None)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        torch_first.main(["--rounds", "0"])
    with pytest.raises(ValueError, match="unknown process kind 'jax'"):
        torch_first.child("jax", 1, 0, 2, 28, 0.35)
