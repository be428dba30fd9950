"""benchmarks.segment_step: the race runs end to end at a tiny size, both contestants train
the same network on the same batch, and the table printed is made of the medians."""
import re

import numba
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import segment_step  # noqa: E402


@pytest.mark.parametrize("extra", [[], ["--head", "lraspp", "--output-stride", "8"]])
def test_quick_run_prints_both_contestants_and_the_ratio(capsys, extra):
    before = numba.get_num_threads()
    try:
        medians = segment_step.main(["--quick", "--repeats", "2", "--warmup", "0", "--threads", "1",
                                     *extra])
        assert numba.get_num_threads() == 1 and torch.get_num_threads() == 1  # both contestants
    finally:
        numba.set_num_threads(before)
    assert list(medians) == ["pytorch", "tinymbv2"] and all(s > 0 for s in medians.values())
    lines = capsys.readouterr().out.strip().splitlines()
    head = "aspp" if not extra else "lraspp"
    stride = 16 if not extra else 8
    assert lines[0].startswith(f"Mobile DeepLabv3 (MobileNetV2 0.35, head {head}, output stride "
                               f"{stride}), 11 classes; training step at 64 px, batch 2; torch ")
    assert lines[0].endswith("1 threads each; medians of 2 after 0 warm-up")
    for line, name in zip(lines[1:3], medians):
        m = re.fullmatch(rf"{name}\s+([\d.]+) ms\s+([\d.]+)x PyTorch\s+([\d.]+) images/s", line)
        assert m, line
        ms, ratio, ips = map(float, m.groups())
        assert ms == pytest.approx(1e3 * medians[name], abs=0.051)
        assert ratio == pytest.approx(medians[name] / medians["pytorch"], abs=0.006)
        assert ips == pytest.approx(2 / medians[name], rel=0.01, abs=0.051)


def test_both_steps_start_from_the_same_loss():
    """Same weights, images and masks: the first losses agree (float32; LR-ASPP has no dropout,
    whose masks differ between the libraries)."""
    args = segment_step.argparse.Namespace(head="lraspp", output_stride=16, size=48, batch=2,
                                           width=0.35, classes=5)
    steps = segment_step.contestants(args)
    ours, theirs = steps["tinymbv2"](), steps["pytorch"]()
    assert np.isfinite(ours) and ours == pytest.approx(theirs, rel=1e-4)
    assert ours == pytest.approx(np.log(5), rel=0.5)  # random init: near uniform


def test_random_masks_hold_classes_and_a_few_ignored_pixels():
    masks = segment_step.random_masks(np.random.default_rng(0), 3, 40, 7)
    assert masks.shape == (3, 40, 40) and masks.dtype == np.int64
    ignored = masks == segment_step.IGNORE
    assert 0.005 < ignored.mean() < 0.05
    assert set(np.unique(masks[~ignored])) == set(range(7))


def test_bad_repeats_are_refused():
    with pytest.raises(SystemExit):
        segment_step.main(["--repeats", "0"])
