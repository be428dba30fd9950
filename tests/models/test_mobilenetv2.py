"""MobileNetV2's structure, sizes, initialisation, variants and memory-efficient inference."""
import math
import tracemalloc

import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor, nn
from tinymbv2.models import (
    TABLE2, InvertedResidual, MobileNetV2, chunked_block, make_divisible,
    memory_efficient_inference, mobilenet_v2, seed_article_net, summary,
)


def _count(model):
    return sum(int(p.size) for p in model.parameters())


def _image(shape, dtype=np.float64, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


@pytest.fixture(scope="module")
def model():
    return mobilenet_v2(seed=0)


def test_make_divisible_rounds_like_torchvision():
    assert [make_divisible(v) for v in (32 * 0.35, 16 * 0.35, 24 * 0.5, 1280 * 1.4, 96 * 0.75)] == [
        16, 8, 16, 1792, 72]
    assert make_divisible(10) == 16  # 8 would be more than 10% below 10
    assert make_divisible(3, 1) == 3


def test_table2_structure(model):
    assert TABLE2[0] == (1, 16, 1, 1) and sum(n for _, _, n, _ in TABLE2) == 17
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(model.blocks) == 17
    assert sum(b.use_res_connect for b in model.blocks) == 10
    assert len(convs) == 52
    assert sum(c.groups > 1 for c in convs) == 17
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 52
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1
    assert all(c.kernel_size in ((1, 1), (3, 3)) and c.bias is None for c in convs)
    assert [b.stride for b in model.blocks] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert [b.oup for b in model.blocks] == [16] + [24] * 2 + [32] * 3 + [64] * 4 + [96] * 3 + [
        160] * 3 + [320]
    assert model.features[0][0].stride == (2, 2) and model.last_channel == 1280
    assert model.classifier[0].p == 0.2


@pytest.mark.parametrize("width, classes, expected", [
    (1.0, 1000, 3_504_872), (1.4, 1000, 6_108_776), (0.75, 1000, 2_636_424),
    (0.5, 1000, 1_968_680), (0.35, 1000, 1_677_128), (1.0, 10, 2_236_682),
])
def test_parameter_counts_match_reference(width, classes, expected):
    assert _count(mobilenet_v2(width_mult=width, num_classes=classes, seed=0)) == expected


def test_init_statistics_follow_torchvision(model):
    zs = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            co, _, kh, kw = m.weight.shape
            std = math.sqrt(2 / (co * kh * kw))  # kaiming normal, fan_out (depthwise: 9*C)
            w = m.weight.data.astype(np.float64)
            # the sample std of n normal draws has relative standard error 1/sqrt(2n)
            assert w.std() == pytest.approx(std, rel=5 / math.sqrt(2 * w.size)), name
            zs.append((w / std).ravel())
        elif isinstance(m, nn.BatchNorm2d):
            assert np.all(m.weight.data == 1) and np.all(m.bias.data == 0), name
            assert np.all(m.running_mean.data == 0) and np.all(m.running_var.data == 1), name
    z = np.concatenate(zs)  # 2.2M draws, all scaled to N(0, 1)
    assert abs(z.mean()) < 5 / math.sqrt(z.size) and abs(z.std() - 1) < 5 / math.sqrt(2 * z.size)
    lin = model.classifier[1]
    assert lin.weight.data.std() == pytest.approx(0.01, rel=5 / math.sqrt(2 * lin.weight.size))
    assert np.all(lin.bias.data == 0) and model.features[0][0].weight.dtype == np.float32


def test_seed_makes_the_model_reproducible():
    a, b, c = (mobilenet_v2(0.35, 10, seed=s) for s in (5, 5, 6))
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    assert not np.array_equal(a.features[0][0].weight.data, c.features[0][0].weight.data)


def test_inverted_residual_block():
    thin = InvertedResidual(32, 16, 1, 1)  # t = 1: no expansion conv
    assert len(thin.conv) == 3 and not thin.use_res_connect  # no expansion layer
    block = InvertedResidual(24, 24, 1, 6).double().eval()
    assert block.hidden_dim == 144 and block.use_res_connect and len(block.conv) == 4
    assert block.conv[0][0].weight.shape == (144, 24, 1, 1)
    assert block.conv[1][0].weight.shape == (144, 1, 3, 3) and block.conv[1][0].groups == 144
    assert block.conv[2].weight.shape == (24, 144, 1, 1)
    x = _image((2, 24, 8, 8))
    np.testing.assert_allclose(block(x).data, x.data + block.conv(x).data, rtol=1e-14)
    down = InvertedResidual(24, 32, 2, 6)
    assert not down.use_res_connect and down(_image((1, 24, 8, 8), np.float32)).shape == (1, 32, 4, 4)
    with pytest.raises(ValueError, match="stride 1 or 2, got 3"):
        InvertedResidual(8, 8, 3, 6)


def test_forward_shapes_and_variants():
    tiny = mobilenet_v2(0.35, 10, seed=0).eval()
    assert tiny(_image((2, 3, 64, 64), np.float32)).shape == (2, 10)
    cifar = mobilenet_v2(0.35, 10, small_input=True, seed=0)
    assert cifar.features[0][0].stride == (1, 1)
    assert [b.stride for b in cifar.blocks][:4] == [1, 1, 1, 2]  # the 24-channel stage at stride 1
    assert summary(cifar, (3, 32, 32)).rows[-7].output_shape == (1, 1280, 4, 4)  # 4x4 final map
    grey = mobilenet_v2(0.35, 10, in_channels=1, small_input=True, seed=0).eval()
    assert grey.features[0][0].weight.shape == (16, 1, 3, 3)
    assert grey(_image((2, 1, 28, 28), np.float32)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"Conv2d\(1, 16.*expected 1 channels.*got 3"):
        grey(_image((2, 3, 28, 28), np.float32))


@pytest.mark.parametrize("kwargs, message", [
    (dict(width_mult=0), "width_mult > 0"), (dict(num_classes=0), "num_classes >= 1"),
    (dict(dropout=1.0), r"dropout in \[0, 1\)"), (dict(in_channels=0), "in_channels >= 1"),
])
def test_bad_model_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"MobileNetV2: expected {message}"):
        mobilenet_v2(**kwargs)


def test_bad_inverted_residual_setting():
    for setting in ([], [(6, 24, 2)]):
        with pytest.raises(ValueError, match=r"non-empty \(t, c, n, s\) rows"):
            MobileNetV2(inverted_residual_setting=setting)


def test_seed_article_net_is_seven_blocks_without_residuals():
    net = seed_article_net(seed=0)
    assert len(net.blocks) == 7 and not any(b.use_res_connect for b in net.blocks)
    assert [(b.expand_ratio, b.oup, b.stride) for b in net.blocks] == [
        (t, c, s) for t, c, _, s in TABLE2]
    s = summary(net)
    assert _count(net) == s.total_params == 2_426_984  # REFERENCE: 2.43M
    assert s.total_macs == 145_786_880  # REFERENCE: 145.8M
    assert round(s.total_macs / 1e6, 1) == 145.8


def test_from_blocks_builds_the_same_model():
    ref = mobilenet_v2(0.5, 10, seed=0)
    specs = [(b.inp, b.oup, b.stride, b.expand_ratio) for b in ref.blocks]
    copy = MobileNetV2.from_blocks(3, (16, 2), specs, 1280, 10)
    assert {k: v.shape for k, v in copy.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()}


# -- memory-efficient inference (paper section 5.1) --------------------------------
@pytest.mark.parametrize("chunks", [1, 3, 4, 64])
def test_memory_efficient_inference_equals_eval_forward(chunks):
    net = mobilenet_v2(0.35, 10, seed=1).double()
    x = _image((2, 3, 32, 32))
    # train a little so the BN statistics are not the trivial 0/1
    net.train()
    net(x)
    net(_image((2, 3, 32, 32), seed=1))
    net.train()
    out = memory_efficient_inference(net, x, chunks=chunks)
    assert net.training  # the mode is restored
    with tinymbv2.no_grad():
        ref = net.eval()(x).data
    err = np.abs(out.data - ref).max() / np.abs(ref).max()
    assert err <= 1e-10 and not out.requires_grad


def test_chunked_block_equals_block_for_each_kind():
    for inp, oup, s, t in [(32, 16, 1, 1), (16, 24, 2, 6), (24, 24, 1, 6)]:
        block = InvertedResidual(inp, oup, s, t).double()
        for bn in (m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):
            rng = np.random.default_rng(bn.num_features)
            bn.running_mean.data[...] = rng.standard_normal(bn.num_features)
            bn.running_var.data[...] = rng.uniform(0.5, 2, bn.num_features)
            bn.bias.data[...] = rng.standard_normal(bn.num_features)
        block.eval()
        x = _image((2, inp, 9, 9))
        with tinymbv2.no_grad():
            np.testing.assert_allclose(chunked_block(block, x, 5).data, block(x).data,
                                       rtol=1e-12, atol=1e-12)


def test_memory_efficient_inference_rejects_bad_arguments():
    net = mobilenet_v2(0.35, 10, seed=0)
    with pytest.raises(ValueError, match="chunks >= 1, got 0"):
        memory_efficient_inference(net, _image((1, 3, 32, 32), np.float32), chunks=0)
    with pytest.raises(TypeError, match="expected a MobileNetV2"):
        memory_efficient_inference(nn.Linear(2, 2), _image((1, 2)), chunks=2)


def test_chunking_lowers_the_peak_traced_memory():
    net = mobilenet_v2(1.0, 10, seed=0).eval()
    x = _image((1, 3, 64, 64), np.float32)

    def peak(fn):
        fn()  # warm-up outside the measurement
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            fn()
            return tracemalloc.get_traced_memory()[1] - start
        finally:
            tracemalloc.stop()

    def normal():
        with tinymbv2.no_grad():
            net(x)

    full, chunked = peak(normal), peak(lambda: memory_efficient_inference(net, x, chunks=4))
    # the expanded 96-channel tensor of block 2 (32x32) sets the normal peak (in
    # inference its conv, BatchNorm and ReLU6 are one fused op: it exists once)
    expanded = 96 * 32 * 32 * 4
    assert full >= expanded
    # in four chunks at most a quarter of it exists at a time: three quarters are saved,
    # less what the slices cost (measured: 571 KB normal, 346 KB in four chunks)
    assert full - chunked >= 0.5 * expanded
