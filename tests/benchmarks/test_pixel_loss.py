"""benchmarks/pixel_loss.py: a short run times all three contestants, after checking that
they give the same gradient."""
import numba
import numpy as np
import torch

from benchmarks import pixel_loss


def test_short_run_times_three_contestants_with_the_same_gradient(capsys):
    before = numba.get_num_threads()
    try:
        medians = pixel_loss.main(["--size", "24", "--batch", "2", "--classes", "5",
                                   "--repeats", "2", "--warmup", "0", "--threads", "1"])
        assert numba.get_num_threads() == 1 and torch.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
    assert list(medians) == ["pytorch", "reference", "numba"]
    assert all(s > 0 for s in medians.values())
    out = capsys.readouterr().out
    assert "(2, 5, 24, 24)" in out and out.count("x PyTorch") == 3


def test_the_contestants_compute_the_same_gradient():
    args = pixel_loss.argparse.Namespace(size=20, batch=2, classes=4)
    grads = [np.asarray(fn()) for fn in pixel_loss.contestants(args).values()]
    assert grads[0].shape == (2, 4, 20, 20) and np.abs(grads[0]).max() > 0
    for g in grads[1:]:
        np.testing.assert_allclose(g, grads[0], rtol=1e-4, atol=1e-9)
