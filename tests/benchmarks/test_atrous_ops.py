"""benchmarks/atrous_ops.py: a short run times every convolution for both contestants, and
the timed calls compute the convolution torch computes."""
import numba
import numpy as np
import torch

from benchmarks import atrous_ops


def test_short_run_prints_every_case(capsys):
    before = numba.get_num_threads()
    try:
        rows = atrous_ops.main(["--size", "6", "--batch", "1", "--repeats", "1", "--warmup", "0",
                                "--threads", "1"])
    finally:
        numba.set_num_threads(before)
    assert list(rows) == [name for *_, name in atrous_ops.CASES]
    assert all(s > 0 for m in rows.values() for s in m.values())
    out = capsys.readouterr().out
    assert all(name in out for name in rows) and out.count("x\n") == len(rows)


def test_ours_and_torch_forward_agree():
    calls = atrous_ops.contestants(8, 4, 6, 2, 10, np.random.default_rng(0))
    ours, theirs = calls["ours forward"](), calls["torch forward"]()
    assert ours.shape == (2, 4, 10, 10)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-5)
    assert isinstance(theirs, torch.Tensor)
