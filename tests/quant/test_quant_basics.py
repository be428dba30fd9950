"""tinymbv2.quant's foundations against PyTorch: the scale and zero point its observers choose
(symmetric and affine, int8 and uint8, per tensor and per channel), fake quantization forward
and its straight-through gradient (per tensor and per channel, float32 and float64), and the
three observers on data whose answer is known."""
import numpy as np
import pytest
import torch
from torch.ao.quantization import observer as tobs

from tinymbv2 import Tensor
from tinymbv2.quant import (MinMaxObserver, MSEObserver, PercentileObserver, choose_qparams,
                            fake_quantize, quant_range)

TORCH_DTYPES = {"int8": torch.qint8, "uint8": torch.quint8}


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_qparams_are_pytorchs_observers(dtype, symmetric, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((6, 50)) * rng.uniform(0.1, 5, (6, 1)) + rng.uniform(-2, 2, (6, 1)))
    x = x.astype(np.float32)
    per_tensor = tobs.MinMaxObserver(dtype=TORCH_DTYPES[dtype], qscheme=torch.per_tensor_symmetric
                                     if symmetric else torch.per_tensor_affine)
    per_tensor(torch.from_numpy(x))
    want_s, want_z = per_tensor.calculate_qparams()
    s, z = choose_qparams(x.min(), x.max(), dtype, symmetric)
    assert s == pytest.approx(float(want_s), rel=1e-6) and int(z) == int(want_z)
    per_channel = tobs.PerChannelMinMaxObserver(
        ch_axis=0, dtype=TORCH_DTYPES[dtype],
        qscheme=torch.per_channel_symmetric if symmetric else torch.per_channel_affine)
    per_channel(torch.from_numpy(x))
    want_s, want_z = per_channel.calculate_qparams()
    s, z = choose_qparams(x.min(axis=1), x.max(axis=1), dtype, symmetric)
    np.testing.assert_allclose(s, want_s.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(z, want_z.numpy())


def test_qparams_hold_zero_exactly_and_refuse_bad_ranges():
    for lo, hi in ((0.5, 3.0), (-4.0, -1.0), (-1.0, 2.5)):
        s, z = choose_qparams(lo, hi, "uint8", symmetric=False)
        assert float(0.0 / s + z) == int(z)          # 0 maps to an integer: stored exactly
    s, z = choose_qparams(0.0, 0.0, "int8")
    assert s == np.finfo(np.float32).eps and z == 0  # a constant-zero tensor still divides
    with pytest.raises(ValueError, match="min_val <= max_val"):
        choose_qparams(2.0, 1.0)
    with pytest.raises(ValueError, match="finite bounds"):
        choose_qparams(0.0, np.inf)
    with pytest.raises(ValueError, match="'int8' or 'uint8'"):
        quant_range("int4")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_fake_quantize_per_tensor_is_pytorchs_with_its_gradient(dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((3, 4, 5, 5)) * 2).astype(dtype)
    x.flat[:4] = [0.05, 0.15, 0.25, -0.35]  # ties: rounded half to even
    up = rng.standard_normal(x.shape).astype(dtype)
    scale, zero, qmin, qmax = 0.1, 3, -20, 25   # a narrow range: values clipped at both ends
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.fake_quantize_per_tensor_affine(xt, scale, zero, qmin, qmax)
    yt.backward(torch.from_numpy(up))
    xo = Tensor(x.copy(), requires_grad=True)
    y = fake_quantize(xo, scale, zero, qmin, qmax)
    y.backward(up)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y.data, yt.detach().numpy())
    np.testing.assert_array_equal(xo.grad, xt.grad.numpy())
    assert 0 < (xo.grad == 0).mean() < 1          # some values clipped, most not


def test_fake_quantize_per_channel_is_pytorchs_with_its_gradient():
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((8, 3, 3, 3)) * rng.uniform(0.1, 3, (8, 1, 1, 1))).astype(np.float32)
    s, z = choose_qparams(w.reshape(8, -1).min(1) * 0.8, w.reshape(8, -1).max(1) * 0.8, "int8")
    up = rng.standard_normal(w.shape).astype(np.float32)
    wt = torch.tensor(w, requires_grad=True)
    yt = torch.fake_quantize_per_channel_affine(wt, torch.from_numpy(s.astype(np.float32)),
                                                torch.from_numpy(z.astype(np.int32)), 0, -128, 127)
    yt.backward(torch.from_numpy(up))
    wo = Tensor(w.copy(), requires_grad=True)
    y = fake_quantize(wo, s.astype(np.float32), z, axis=0)
    y.backward(up)
    np.testing.assert_array_equal(y.data, yt.detach().numpy())
    np.testing.assert_array_equal(wo.grad, wt.grad.numpy())
    assert len(np.unique(y.data[0])) <= 256


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=0.0, zero_point=0), "scales > 0"),
    (dict(scale=0.1, zero_point=200), r"zero points in \[-128, 127\]"),
    (dict(scale=[0.1, 0.2], zero_point=[0, 0]), "per tensor"),
    (dict(scale=[0.1, 0.2], zero_point=[0, 0], axis=1), "takes 3 scales"),
    (dict(scale=0.1, zero_point=0, qmin=5, qmax=5), "qmin < qmax"),
])
def test_fake_quantize_refuses_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fake_quantize(Tensor(np.zeros((2, 3))), **kwargs)
    with pytest.raises(TypeError, match="floating Tensor"):
        fake_quantize(np.zeros(3), 0.1, 0)


def test_minmax_observer_matches_pytorchs_over_batches():
    rng = np.random.default_rng(1)
    ours, theirs = MinMaxObserver("uint8"), tobs.MinMaxObserver(dtype=torch.quint8)
    for _ in range(3):
        batch = (rng.standard_normal(200) * 3).astype(np.float32)
        assert ours(batch) is batch
        theirs(torch.from_numpy(batch))
    assert ours.range() == (float(theirs.min_val), float(theirs.max_val))
    s, z = ours.qparams()
    ts, tz = theirs.calculate_qparams()
    assert s == pytest.approx(float(ts), rel=1e-6) and int(z) == int(tz)
    with pytest.raises(RuntimeError, match="no batch observed"):
        MinMaxObserver().range()
    with pytest.raises(ValueError, match="inf or a NaN"):
        MinMaxObserver()(np.array([1.0, np.nan]))


def test_percentile_observer_clips_the_outliers_that_minmax_keeps():
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal(10_000) for _ in range(3)]
    batches[1][5] = 80.0                                  # one outlier
    pct, mm = PercentileObserver(99.9), MinMaxObserver()
    for b in batches:
        pct(b), mm(b)
    lo, hi = pct.range()
    assert hi == pytest.approx(np.mean([np.percentile(b, 99.9) for b in batches]))
    assert lo == pytest.approx(np.mean([np.percentile(b, 0.1) for b in batches]))
    assert mm.range()[1] == 80.0 and 2.5 < hi < 4.0
    with pytest.raises(ValueError, match=r"\(50, 100\]"):
        PercentileObserver(40)


def test_mse_observer_picks_the_range_with_the_smallest_error():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(20_000), [60.0, -55.0]])  # two far outliers
    obs = MSEObserver("int8", symmetric=True, steps=50, sample=5_000)
    for part in np.array_split(x, 4):
        obs(part)
    lo, hi = obs.range()
    assert obs.kept.size == 5_000 and obs.seen == x.size
    errors = {a: obs.error(a) for a in np.arange(1, 51) / 50}
    best = min(errors, key=errors.get)
    assert hi == pytest.approx(best * 60.0) and lo == pytest.approx(best * -55.0)
    assert errors[best] < errors[1.0] / 10          # clipping the outliers pays many times over
    assert 2.0 < hi < 15.0
