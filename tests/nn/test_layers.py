"""The layers against torch.nn (values and gradients in float64), their checks, and nn.init."""
import math

import numpy as np
import pytest
import torch

from tinymbv2 import Tensor, nn
from tinymbv2.nn import init

torch.set_num_threads(1)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _copy_params(ours, theirs):
    for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == tname
        p.data = tp.detach().numpy().copy()


def _check_against_torch(ours, theirs, x_np, tol=1e-12):
    """Same output, input gradient and parameter gradients under a random upstream grad."""
    ours.double()
    theirs.double()
    _copy_params(ours, theirs)
    x = Tensor(x_np, requires_grad=True)
    tx = torch.from_numpy(x_np.copy()).requires_grad_(True)
    y, ty = ours(x), theirs(tx)
    g = _rng(1).standard_normal(ty.shape)
    y.backward(g)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=tol, atol=tol)
    for (name, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("args", [
    dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, bias=True),
    dict(in_channels=6, out_channels=6, kernel_size=3, stride=1, padding=1, groups=6, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=(1, 3), stride=(1, 2), padding=(0, 1), groups=2),
    dict(in_channels=5, out_channels=7, kernel_size=1, bias=False),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=2, dilation=2, groups=4, bias=False),
    dict(in_channels=3, out_channels=5, kernel_size=3, stride=2, padding=3, dilation=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), padding=(1, 2), dilation=(2, 3), groups=2),
    dict(in_channels=5, out_channels=7, kernel_size=1, dilation=6, bias=False),
])
def test_conv2d_matches_torch(args):
    _check_against_torch(nn.Conv2d(**args), torch.nn.Conv2d(**args),
                         _rng().standard_normal((2, args["in_channels"], 7, 6)))


def test_dilated_conv2d_repr_output_shape_and_state_dict_are_torchs():
    """dilation comes after padding, as in torch's signature; the repr shows it as torch's
    does (only when not 1); the weights are the same tensors either way."""
    ours, theirs = nn.Conv2d(8, 8, 3, 1, 6, 6, 8, False), torch.nn.Conv2d(8, 8, 3, 1, 6, 6, 8, False)
    assert repr(ours) == repr(theirs) == (
        "Conv2d(8, 8, kernel_size=(3, 3), stride=(1, 1), padding=(6, 6), dilation=(6, 6), "
        "groups=8, bias=False)")
    assert repr(nn.Conv2d(3, 4, 3, dilation=(1, 2))) == repr(torch.nn.Conv2d(3, 4, 3, dilation=(1, 2)))
    assert "dilation" not in repr(nn.Conv2d(3, 4, 3))
    assert ours.output_shape((2, 8, 13, 11)) == tuple(theirs(torch.zeros(2, 8, 13, 11)).shape)
    assert nn.Conv2d(3, 4, 3, 2, 0, 3).output_shape((1, 3, 17, 17)) == (1, 4, 6, 6)  # (17-7)//2+1
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = _rng(2).standard_normal((1, 8, 13, 11)).astype(np.float32)
    np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


def test_conv2d_refuses_a_bad_dilation():
    with pytest.raises(ValueError, match=r"Conv2d: expected .*dilation >= 1.*dilation=\(0, 2\)"):
        nn.Conv2d(3, 4, 3, dilation=(0, 2))
    with pytest.raises(TypeError, match="Conv2d: expected dilation as an int or a pair of ints"):
        nn.Conv2d(3, 4, 3, dilation=1.5)
    with pytest.raises(ValueError, match=r"smaller than the kernel 3x3 \(spread over 9x9 by dilation\)"):
        nn.Conv2d(3, 4, 3, dilation=4)(Tensor(np.zeros((1, 3, 8, 8), np.float32)))


def test_linear_matches_torch():
    _check_against_torch(nn.Linear(5, 3), torch.nn.Linear(5, 3), _rng().standard_normal((4, 5)))


def test_batchnorm_train_and_eval_match_torch_including_running_stats():
    ours, theirs = nn.BatchNorm2d(3, momentum=0.3), torch.nn.BatchNorm2d(3, momentum=0.3)
    x = _rng().standard_normal((2, 3, 4, 5)) * 2 + 1
    _check_against_torch(ours, theirs, x)  # training mode
    _check_against_torch(ours, theirs, x + 0.5)
    sd = theirs.state_dict()
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(v, sd[k].numpy(), rtol=1e-12, atol=1e-14, err_msg=k)
    assert int(ours.num_batches_tracked.data) == 2
    ours.eval(), theirs.eval()
    _check_against_torch(ours, theirs, x)
    assert int(ours.num_batches_tracked.data) == 2  # eval does not count batches


def test_batchnorm_cumulative_average_and_no_running_stats():
    ours, theirs = nn.BatchNorm2d(2, momentum=None), torch.nn.BatchNorm2d(2, momentum=None)
    ours.double(), theirs.double()
    for seed in range(3):
        x = _rng(seed).standard_normal((3, 2, 2, 2))
        ours(Tensor(x)), theirs(torch.from_numpy(x))
    np.testing.assert_allclose(ours.running_var.data, theirs.running_var.numpy(), rtol=1e-12)
    plain = nn.BatchNorm2d(2, affine=False, track_running_stats=False).eval()
    assert list(plain.state_dict()) == []
    y = plain(Tensor(_rng().standard_normal((2, 2, 3, 3)).astype(np.float32)))
    np.testing.assert_allclose(y.data.mean(axis=(0, 2, 3)), 0, atol=1e-6)  # batch statistics


def test_activations_pooling_flatten_identity():
    x = Tensor(np.array([[[[-1.0, 0.5], [6.5, 3.0]]]], dtype=np.float32))  # (1, 1, 2, 2)
    np.testing.assert_array_equal(nn.ReLU6()(x).data.ravel(), [0, 0.5, 6, 3])
    np.testing.assert_array_equal(nn.ReLU()(x).data.ravel(), [0, 0.5, 6.5, 3])
    np.testing.assert_allclose(nn.Sigmoid()(x).data.ravel(), 1 / (1 + np.exp([1, -0.5, -6.5, -3])),
                               rtol=1e-6)
    pooled = nn.AdaptiveAvgPool2d(1)(x)
    assert pooled.shape == (1, 1, 1, 1) and pooled.data.item() == pytest.approx(2.25)
    assert nn.Flatten()(pooled).shape == (1, 1)
    assert nn.Identity()(x) is x


def test_dropout_scales_in_training_and_is_identity_in_eval():
    drop = nn.Dropout(0.25, generator=np.random.default_rng(0))
    x = Tensor(np.ones((200, 100), dtype=np.float32))
    y = drop(x).data
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01  # 20,000 draws: std 0.003
    again = nn.Dropout(0.25, generator=np.random.default_rng(0))(x).data
    np.testing.assert_array_equal(y, again)  # the generator makes it reproducible
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match=r"Dropout: expected a probability p in \[0, 1\], got 1.5"):
        nn.Dropout(1.5)


def test_layers_name_themselves_in_input_errors():
    conv = nn.Conv2d(3, 8, 3)
    with pytest.raises(ValueError, match=r"Conv2d\(3, 8.*expected 3 channels.*got 4"):
        conv(Tensor(np.zeros((1, 4, 8, 8), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"Conv2d\(3, 8.*expected a 4-d input.*got a 3-d input"):
        conv(Tensor(np.zeros((3, 8, 8), dtype=np.float32)))
    with pytest.raises(TypeError, match=r"Conv2d\(3, 8.*expected a tinymbv2 Tensor, got ndarray"):
        conv(np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(TypeError, match=r"expected float32 input.*got float64"):
        conv(Tensor(np.zeros((1, 3, 8, 8))))
    with pytest.raises(ValueError, match=r"Conv2d\(3, 8.*input 2x2 is smaller than the kernel 3x3"):
        conv(Tensor(np.zeros((1, 3, 2, 2), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4.*expected 4 channels.*got 3"):
        nn.BatchNorm2d(4)(Tensor(np.zeros((2, 3, 2, 2), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"Linear\(in_features=5.*expected 5 channels.*got 4"):
        nn.Linear(5, 2)(Tensor(np.zeros((2, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d.*expected a 4-d input"):
        nn.AdaptiveAvgPool2d(1)(Tensor(np.zeros((2, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"Flatten\(start_dim=1\).*rank > 1, got a 1-d input"):
        nn.Flatten()(Tensor(np.zeros(4, dtype=np.float32)))


def test_layer_constructors_validate_arguments():
    with pytest.raises(ValueError, match="groups=4 to divide in_channels=6"):
        nn.Conv2d(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="in_channels to be an int >= 1, got 0"):
        nn.Conv2d(0, 8, 3)
    with pytest.raises(TypeError, match="kernel_size as an int or a pair"):
        nn.Conv2d(3, 8, (3, 3, 3))
    with pytest.raises(ValueError, match="padding >= 0"):
        nn.Conv2d(3, 8, 3, padding=-1)
    with pytest.raises(ValueError, match="momentum in"):
        nn.BatchNorm2d(3, momentum=2.0)
    with pytest.raises(ValueError, match="out_features"):
        nn.Linear(3, 0)


def test_default_init_is_torchs_bound_one_over_sqrt_fan_in():
    conv = nn.Conv2d(16, 64, 3)  # fan_in = 144, bound = 1/12
    w, b = conv.weight.data, conv.bias.data
    assert w.dtype == np.float32 and np.abs(w).max() <= 1 / 12 and np.abs(b).max() <= 1 / 12
    # U(-a, a) has std a/sqrt(3); 9216 draws: relative sampling error of the std ~ 0.6%
    assert w.std() == pytest.approx(1 / 12 / math.sqrt(3), rel=0.03)
    lin = nn.Linear(400, 300)
    assert np.abs(lin.weight.data).max() <= 0.05
    assert lin.weight.data.std() == pytest.approx(0.05 / math.sqrt(3), rel=0.03)
    bn = nn.BatchNorm2d(5)
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)
    assert np.all(bn.running_var.data == 1) and np.all(bn.running_mean.data == 0)


@pytest.mark.parametrize("mode, fan", [("fan_out", 64 * 9), ("fan_in", 32 * 9)])
def test_kaiming_normal_std(mode, fan):
    w = np.empty((64, 32, 3, 3), dtype=np.float32)  # 18,432 draws: std error ~0.5%
    init.kaiming_normal_(w, mode=mode, nonlinearity="relu", generator=_rng())
    assert w.mean() == pytest.approx(0, abs=4 * math.sqrt(2 / fan) / math.sqrt(w.size))
    assert w.std() == pytest.approx(math.sqrt(2 / fan), rel=0.025)


def test_kaiming_depthwise_fan_out_is_nine_times_channels():
    assert init.fan_in_and_fan_out(np.empty((96, 1, 3, 3))) == (9, 96 * 9)
    assert init.fan_in_and_fan_out(np.empty((10, 1280))) == (1280, 10)
    w = np.empty((960, 1, 3, 3))
    init.kaiming_normal_(w, mode="fan_out", generator=_rng())
    assert w.std() == pytest.approx(math.sqrt(2 / (960 * 9)), rel=0.03)


def test_kaiming_uniform_and_simple_fills():
    w = Tensor(np.empty((50, 40), dtype=np.float32))
    out = init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu", generator=_rng())
    bound = math.sqrt(3) * math.sqrt(2 / 40)
    assert out is w and np.abs(w.data).max() <= bound
    assert w.data.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    init.normal_(w, 0.0, 0.01, generator=_rng())
    assert w.data.std() == pytest.approx(0.01, rel=0.03)
    init.uniform_(w, 2.0, 3.0, generator=_rng())
    assert 2.0 <= w.data.min() and w.data.max() <= 3.0
    assert np.all(init.zeros_(w).data == 0) and np.all(init.ones_(w).data == 1)
    assert np.all(init.constant_(w, 0.5).data == 0.5)
    a, b = np.empty(5), np.empty(5)
    init.normal_(a, generator=np.random.default_rng(4))
    init.normal_(b, generator=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)


def test_init_gains_and_errors():
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", 0) == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("linear") == 1.0
    with pytest.raises(ValueError, match="unknown nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="mode 'fan_in' or 'fan_out'"):
        init.kaiming_normal_(np.empty((3, 3)), mode="fan")
    with pytest.raises(ValueError, match=">= 2 dimensions"):
        init.kaiming_normal_(np.empty(3))
    with pytest.raises(TypeError, match="np.random.Generator"):
        init.normal_(np.empty(3), generator=42)
