"""Mobile DeepLabv3 against torchvision's parts: DeepLabHead / ASPP, LRASPPHead, and
mobilenet_v2's features patched to the same strides, dilations and paddings (as torchvision
dilates MobileNetV3 for its segmentation models), joined by its IntermediateLayerGetter and
DeepLabV3 / LRASPP models (benchmarks/torch_deeplab.py builds the twin). Same state_dict keys;
with the same weights, the same outputs, running statistics and gradients in float64."""
import numpy as np
import pytest
import torch
from torchvision.models.segmentation.deeplabv3 import ASPP as TVASPP
from torchvision.models.segmentation.deeplabv3 import DeepLabHead as TVDeepLabHead
from torchvision.models.segmentation.lraspp import LRASPPHead as TVLRASPPHead

import tinymbv2
from benchmarks.torch_deeplab import dilated_features as tv_dilated_features
from benchmarks.torch_deeplab import torch_deeplabv3 as tv_model
from tinymbv2 import Tensor, fuse
from tinymbv2.models import (DeepLabHead, LRASPPHead, SimpleHead, deeplabv3_mobilenet_v2, dilate,
                             mobilenet_v2, smallest_input_size, summary)
from torch_twins import randomise_bn, rel

torch.set_num_threads(1)


def _copy(ours, tv):
    ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    return ours.double()


def _dropout_off(*models):
    """Dropout in eval mode (its masks cannot be matched across libraries); BN stays in training."""
    for model in models:
        for m in model.modules():
            if type(m).__name__ == "Dropout":
                m.eval()


def _check_gradients(ours, tv):
    tv_params = dict(tv.named_parameters())
    assert set(tv_params) == {name for name, _ in ours.named_parameters()}
    scale = max(float(p.grad.abs().max()) for p in tv.parameters())
    for name, p in ours.named_parameters():
        ref = tv_params[name].grad.numpy()
        if np.abs(ref).max() <= 1e-12 * scale:      # a BN bias that the next BN cancels: noise
            assert np.abs(p.grad).max() <= 1e-12 * scale, name
        else:
            assert rel(p.grad, ref) <= 1e-9, name


def _train_step_equal(ours, tv, inputs, tv_inputs, out=lambda y: y):
    """Train mode (dropout off): outputs, running statistics and every gradient to 1e-9."""
    ours.train(), tv.train()
    _dropout_off(ours, tv)
    y, ty = ours(inputs), out(tv(tv_inputs))
    assert y.shape == tuple(ty.shape)
    assert rel(y.data, ty) <= 1e-9
    g = np.random.default_rng(5).standard_normal(y.shape)
    (y * Tensor(g)).sum().backward()
    (ty * torch.from_numpy(g)).sum().backward()
    theirs = tv.state_dict()
    for k, v in ours.state_dict().items():
        if "running" in k:
            assert rel(v, theirs[k]) <= 1e-9, k
    _check_gradients(ours, tv)
    return y


@pytest.mark.parametrize("head", ["aspp", "simple", "lraspp"])
def test_heads_match_torchvision_heads(head):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    high = rng.standard_normal((2, 40, 6, 5))
    if head == "lraspp":
        tv = randomise_bn(TVLRASPPHead(16, 40, 5, 128)).double()
        ours = _copy(LRASPPHead(16, 40, 5), tv)
        low = rng.standard_normal((2, 16, 11, 9))  # upsampled to a size that is not 2x
        y = _train_step_equal(ours, tv, {"low": Tensor(low), "high": Tensor(high)},
                              {"low": torch.from_numpy(low), "high": torch.from_numpy(high)})
        assert y.shape == (2, 5, 11, 9)
        return
    if head == "aspp":
        tv = randomise_bn(TVDeepLabHead(40, 5, (1, 2, 3))).double()
        ours = _copy(DeepLabHead(40, 5, (1, 2, 3)), tv)
    else:
        tv = randomise_bn(torch.nn.Sequential(TVASPP(40, []), torch.nn.Conv2d(256, 5, 1))).double()
        ours = _copy(SimpleHead(40, 5), tv)
    assert list(ours.state_dict()) == list(tv.state_dict())
    y = _train_step_equal(ours, tv, Tensor(high), torch.from_numpy(high))
    assert y.shape == (2, 5, 6, 5)
    ours.eval(), tv.eval()
    with tinymbv2.no_grad(), torch.no_grad():
        assert rel(ours(Tensor(high)).data, tv(torch.from_numpy(high))) <= 1e-9


@pytest.mark.parametrize("output_stride,width", [(16, 1.0), (8, 0.5)])
def test_dilated_backbone_matches_patched_torchvision(output_stride, width):
    torch.manual_seed(1)
    tv = randomise_bn(tv_dilated_features(width, output_stride)).double()
    ours = mobilenet_v2(width, seed=0).features[:-1]
    dilate(ours, output_stride)
    def layout(features):
        return [(tuple(b.conv[-3][0].stride), tuple(b.conv[-3][0].dilation),
                 tuple(b.conv[-3][0].padding)) for b in list(features)[1:]]

    assert layout(ours) == layout(tv)
    assert sum(d != (1, 1) for _, d, _ in layout(ours)) == {16: 3, 8: 10}[output_stride]
    _copy(ours, tv)
    x = np.random.default_rng(1).standard_normal((2, 3, 48, 40))
    y = _train_step_equal(ours, tv, Tensor(x), torch.from_numpy(x))
    assert y.shape == (2, tv[-1].out_channels, -(-48 // output_stride), -(-40 // output_stride))


def test_dilation_samples_the_strided_network_densely():
    """The atrous algorithm: same weights, eval mode; the output-stride-8 map taken every 4th
    pixel is the undilated (stride-32) map, and the stride-16 one every 2nd."""
    model = mobilenet_v2(0.5, seed=0).double().eval()
    rng = np.random.default_rng(0)
    for bn in (m for m in model.modules() if type(m).__name__ == "BatchNorm2d"):
        bn.running_mean.data[...] = 0.1 * rng.standard_normal(bn.num_features)
        bn.running_var.data[...] = 0.5 + rng.random(bn.num_features)
    x = Tensor(rng.standard_normal((1, 3, 64, 64)))
    plain = model.features[:-1]
    with tinymbv2.no_grad():
        ref = plain(x).data                                          # (1, 160, 2, 2)
        for output_stride in (16, 8):
            dense = dilate(mobilenet_v2(0.5, seed=0).double().features[:-1], output_stride)
            dense.load_state_dict(plain.state_dict())
            y = dense.eval()(x).data
            step = 32 // output_stride
            assert y.shape[-1] == 2 * step
            np.testing.assert_allclose(y[..., ::step, ::step], ref, rtol=0, atol=1e-12 * np.abs(ref).max())
            assert np.abs(y[..., 1::step, :] - y[..., ::step, :]).max() > 1e-8 * np.abs(ref).max()


@pytest.mark.parametrize("head,output_stride", [("aspp", 16), ("simple", 8), ("lraspp", 16)])
def test_whole_model_matches_torchvision(head, output_stride):
    torch.manual_seed(2)
    tv = randomise_bn(tv_model(head, 4, output_stride, width=0.5)).double()
    ours = deeplabv3_mobilenet_v2(4, output_stride, head, width_mult=0.5, seed=0)
    assert list(ours.state_dict()) == list(tv.state_dict())
    _copy(ours, tv)
    x = np.random.default_rng(3).standard_normal((2, 3, 45, 38))   # odd sizes: output = input's
    y = _train_step_equal(ours, tv, Tensor(x), torch.from_numpy(x), out=lambda r: r["out"])
    assert y.shape == (2, 4, 45, 38)


def test_torch_twin_takes_our_state_dict_grey_images():
    """The other direction (as the benchmark copies): our weights into the twin, 1 channel."""
    ours = deeplabv3_mobilenet_v2(3, 16, "aspp", width_mult=0.35, in_channels=1, seed=0).double()
    tv = tv_model("aspp", 3, 16, width=0.35, in_channels=1).double()
    tv.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    ours.eval(), tv.eval()
    x = np.random.default_rng(6).standard_normal((2, 1, 33, 40))
    with tinymbv2.no_grad(), torch.no_grad():
        y, ref = ours(Tensor(x)).data, tv(torch.from_numpy(x))["out"]
    assert y.shape == (2, 3, 33, 40)
    assert rel(y, ref) <= 1e-12
    with pytest.raises(ValueError, match="expected head .*got 'fcn'"):
        tv_model("fcn", 3)


def test_full_size_keys_parameters_and_default_rates():
    for output_stride in (16, 8):
        ours = deeplabv3_mobilenet_v2(21, output_stride, seed=0)
        assert ours.classifier[0].atrous_rates == {16: (6, 12, 18), 8: (12, 24, 36)}[output_stride]
        assert [b[0].dilation for b in ours.classifier[0].convs[1:4]] == \
            [(r, r) for r in ours.classifier[0].atrous_rates]
    tv = tv_model("aspp", 21, 16)
    assert list(ours.state_dict()) == list(tv.state_dict())
    counts = {head: sum(int(p.size) for p in deeplabv3_mobilenet_v2(21, 16, head).parameters())
              for head in ("aspp", "simple", "lraspp")}
    assert counts == {"aspp": sum(p.numel() for p in tv.parameters()),
                      "simple": 2_113_557,       # Table 7, without ASPP: 2.11M
                      "lraspp": sum(p.numel() for p in tv_model("lraspp", 21, 16).parameters())}
    assert counts["aspp"] - (256 * 256 * 9 + 2 * 256) == 4_523_541  # Table 7, with ASPP: 4.52M
    ours = deeplabv3_mobilenet_v2(3, head="aspp", atrous_rates=[12, 24, 36], seed=0)
    assert ours.classifier[0].atrous_rates == (12, 24, 36)


def test_seed_makes_the_initialisation_reproducible():
    a, b = (deeplabv3_mobilenet_v2(5, head="lraspp", width_mult=0.35, seed=7) for _ in range(2))
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    c = deeplabv3_mobilenet_v2(5, head="lraspp", width_mult=0.35, seed=8)
    assert not np.array_equal(a.classifier.low_classifier.weight.data,
                              c.classifier.low_classifier.weight.data)


@pytest.mark.parametrize("kwargs,match", [
    ({"output_stride": 32}, "output_stride 8 or 16, got 32"),
    ({"output_stride": 4}, "output_stride 8 or 16, got 4"),
    ({"head": "fcn"}, "head in .*got 'fcn'"),
    ({"atrous_rates": (6, 12)}, r"three ints >= 1 .*got \(6, 12\)"),
    ({"atrous_rates": (6, 12, 18, 24)}, "three ints"),
    ({"atrous_rates": (6, 0, 18)}, "three ints"),
    ({"head": "simple", "atrous_rates": (6, 12, 18)}, "only the 'aspp' head has atrous rates"),
    ({"num_classes": 0}, "num_classes >= 1, got 0"),
])
def test_bad_arguments_are_refused_with_clear_errors(kwargs, match):
    args = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        deeplabv3_mobilenet_v2(**args)


@pytest.mark.parametrize("head", ["aspp", "lraspp"])
def test_fused_view_equals_the_plain_model(head):
    model = deeplabv3_mobilenet_v2(3, 16, head, width_mult=0.35, seed=0).double()
    _dropout_off(model)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 40, 40)))
    fused = fuse(model)
    assert type(fused.backbone).__name__ == "FusedIntermediateLayers"  # runs fused between maps
    y, yf = model(x), fused(x)
    assert rel(yf.data, y.data) <= 1e-12
    model.eval()
    with tinymbv2.no_grad():
        assert rel(fused(x).data, model(x).data) <= 1e-12


def test_summary_counts_the_segmentation_model():
    model = deeplabv3_mobilenet_v2(21, 16, "simple")
    s = summary(model, input_size=(3, 512, 512))
    assert s.output_shape == (1, 21, 512, 512)
    assert s.total_params == 2_113_557
    assert s.part("backbone")[0] == 1_811_712
    rows = {r.name: r for r in s.rows}
    assert rows["backbone.17.conv.2"].output_shape == (1, 320, 32, 32)   # output stride 16
    assert rows["classifier.0.convs.1.3"].output_shape == (1, 256, 1, 1)       # image pooling
    assert rows["classifier.0.convs.1.upsample"].output_shape == (1, 256, 32, 32)  # spread back
    assert rows["classifier.0.project.0"].macs == 32 * 32 * 512 * 256
    assert s.rows[-1].name == "upsample" and s.rows[-1].macs == 0
    lr = summary(deeplabv3_mobilenet_v2(21, 16, "lraspp"), input_size=(3, 64, 96))
    assert lr.output_shape == (1, 21, 64, 96)
    assert {r.name: r.output_shape for r in lr.rows}["classifier.high_classifier"] == (1, 21, 8, 12)


def test_summary_resizes_through_upsample_layers():
    from tinymbv2 import nn
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Sigmoid(),
                        nn.Upsample(scale_factor=2.5, mode="bilinear"), nn.Upsample(size=(7, 5)))
    s = summary(net, input_size=(3, 10, 9))
    assert [r.output_shape for r in s.rows] == [(1, 4, 5, 5), (1, 4, 5, 5), (1, 4, 12, 12), (1, 4, 7, 5)]
    assert s.total_macs == 4 * 25 * 27


@pytest.mark.parametrize("output_stride,side", [(16, 9), (8, 5)])
def test_smallest_input_counts_the_strides_left(output_stride, side):
    """Dilation removes strides: 4 stride-2 layers at output stride 16 (2^3 + 1 px), 3 at 8."""
    model = deeplabv3_mobilenet_v2(3, output_stride, "lraspp", width_mult=0.35, seed=0)
    assert smallest_input_size(model) == side
    with tinymbv2.no_grad():
        assert model.eval()(Tensor(np.zeros((1, 3, side, side), np.float32))).shape == (1, 3, side, side)


@pytest.mark.parametrize("head,output_stride", [("aspp", 16), ("aspp", 8), ("lraspp", 16)])
def test_eval_logits_float32_full_width(head, output_stride):
    """Width 1.0, 128 px, float32, eval (the numba kernels' float32 paths at real widths)."""
    torch.manual_seed(4)
    tv = randomise_bn(tv_model(head, 21, output_stride)).eval()
    ours = deeplabv3_mobilenet_v2(21, output_stride, head, seed=0)
    ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
    x = np.random.default_rng(4).standard_normal((1, 3, 128, 128)).astype(np.float32)
    with tinymbv2.no_grad():
        y = fuse(ours.eval())(Tensor(x)).data
    with torch.no_grad():
        ref = tv(torch.from_numpy(x))["out"]
    assert y.dtype == np.float32 and y.shape == (1, 21, 128, 128)
    assert rel(y, ref) <= 1e-4
