"""ONNX export: onnx.checker accepts every file, and onnxruntime's CPU output equals the
model's eval-mode output to 1e-5 relative in float32, BatchNorm folded or not."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import tinymbv2
from tinymbv2 import Tensor, nn
from tinymbv2.export import EXPORTERS, to_onnx
from tinymbv2.models import (deeplabv3_mobilenet_v2, mobilenet_v2, seed_article_net,
                             ssdlite_mobilenet_v2)

WIDTHS = (1.4, 1.0, 0.75, 0.5, 0.35)  # the widths tests/models/test_parity.py checks


def randomise_bn(model, seed=0):
    """Non-trivial BatchNorm statistics and parameters, so folding has something to fold."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data[...] = rng.uniform(0.5, 1.5, c)
            m.bias.data[...] = rng.normal(0.0, 0.2, c)
            m.running_mean.data[...] = rng.normal(0.0, 0.2, c)
            m.running_var.data[...] = rng.uniform(0.5, 2.0, c)
    return model.eval()


def run_both(model, path, shape, **kwargs):
    """(tinymbv2's outputs, onnxruntime's) on one random float32 batch; the file checked."""
    to_onnx(model, path, shape, **kwargs)
    onnx.checker.check_model(str(path), full_check=True)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    with tinymbv2.no_grad():
        ours = model(Tensor(x))
    ours = [np.asarray(t.data) for t in (ours if isinstance(ours, tuple) else (ours,))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": x})
    return ours, theirs


def assert_close(ours, theirs):
    """Equal to 1e-5 relative: max |ours - theirs| <= 1e-5 max |ours|, output by output."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and b.dtype == np.float32
        assert np.abs(a).max() > 0  # a zero output would compare equal to anything small
        err = np.abs(a - b).max() / np.abs(a).max()
        assert err <= 1e-5, f"relative error {err:.2e}"


@pytest.mark.parametrize("small_input", [True, False])
@pytest.mark.parametrize("width", WIDTHS)
def test_mobilenet_v2_every_width(width, small_input, tmp_path):
    model = randomise_bn(mobilenet_v2(width, num_classes=10, small_input=small_input, seed=0))
    assert_close(*run_both(model, tmp_path / "m.onnx", (2, 3, 32, 32)))


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("small_input", [True, False])
def test_folded_and_unfolded_graphs(fold, small_input, tmp_path):
    model = randomise_bn(mobilenet_v2(0.35, num_classes=4, in_channels=1, small_input=small_input,
                                      seed=1))
    path = tmp_path / "m.onnx"
    assert_close(*run_both(model, path, (3, 1, 32, 32), fold=fold))
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert ops.count("Conv") == convs == 52
    assert ops.count("BatchNormalization") == (0 if fold else convs)
    residuals = sum(block.use_res_connect for block in model.blocks)
    # at width 0.35 block 2 is 8 -> 8 channels: a residual when small_input leaves it stride 1
    assert ops.count("Add") == residuals == (11 if small_input else 10)
    assert ops.count("Clip") == 35  # 16 expansions, 17 depthwise, the stem and the head
    assert ops[-3:] == ["GlobalAveragePool", "Flatten", "Gemm"]  # Dropout left out
    names = {init.name for init in graph.initializer}
    assert {"features.0.0.weight", "classifier.1.weight", "classifier.1.bias"} <= names
    assert ("features.0.1.running_var" in names) == (not fold)
    assert ("features.0.0.bias" in names) == fold  # the folded BatchNorm's bias
    stem = graph.node[0]
    assert stem.name == "features.0.0" and stem.output == ["features.0.0"]
    depthwise = next(n for n in graph.node if n.name == "features.2.conv.1.0")
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in depthwise.attribute}
    conv = model.features[2].conv[1][0]
    assert attributes["group"] == conv.groups == conv.in_channels
    assert attributes["strides"] == [1 if small_input else 2] * 2 and attributes["pads"] == [1] * 4
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["classifier.1"]


def test_opset_11_and_the_newest_write_the_same_network(tmp_path):
    model = randomise_bn(mobilenet_v2(0.35, num_classes=5, small_input=True, seed=2))
    for opset in (11, 13, onnx.defs.onnx_opset_version()):
        path = tmp_path / f"m{opset}.onnx"
        assert_close(*run_both(model, path, (1, 3, 32, 32), opset=opset))
        assert onnx.load(str(path)).opset_import[0].version == opset


@pytest.mark.parametrize("kwargs", [dict(bottleneck_activation="relu6"), dict(shortcut="none"),
                                    dict(shortcut="expansion"), dict(expand_ratio=2)])
def test_the_ablations(kwargs, tmp_path):
    model = randomise_bn(mobilenet_v2(0.35, num_classes=4, small_input=True, seed=0, **kwargs))
    for fold in (True, False):
        path = tmp_path / "a.onnx"
        assert_close(*run_both(model, path, (2, 3, 32, 32), fold=fold))
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    # expansion: an add wherever a block's expanded tensor has its predecessor's shape (at
    # width 0.35, 32 px: blocks 3, 4, 6, 7, 9, 10, 11, 13, 14, 16, 17); the others keep the
    # 11 bottleneck residuals (block 2 is 8 -> 8 channels at stride 1)
    adds = {"bottleneck_activation": 11, "shortcut": {"none": 0, "expansion": 11}.get(
        kwargs.get("shortcut")), "expand_ratio": 11}[next(iter(kwargs))]
    assert ops.count("Add") == adds
    names = [node.name for node in onnx.load(str(path)).graph.node if node.op_type == "Add"]
    if kwargs.get("shortcut") == "expansion":
        assert names[:3] == ["features.3.add", "features.4.add", "features.6.add"]
    assert ops.count("Clip") == 35 + (17 if "bottleneck_activation" in kwargs else 0)


def test_a_float64_model_is_exported_in_float32(tmp_path):
    model = randomise_bn(mobilenet_v2(0.35, num_classes=4, small_input=True, seed=0)).double()
    path = tmp_path / "m.onnx"
    to_onnx(model, path, (2, 3, 32, 32))
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32))
    with tinymbv2.no_grad():
        ours = model(Tensor(x)).data
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": x.astype(np.float32)})[0]
    assert ours.dtype == np.float64 and theirs.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(ours).max()
    graph = onnx.load(str(path)).graph
    assert {init.data_type for init in graph.initializer if init.name.endswith("weight")} == \
        {onnx.TensorProto.FLOAT}


def test_a_fused_view_is_refused(tmp_path):
    view = tinymbv2.fuse(mobilenet_v2(0.35, num_classes=3, small_input=True, seed=0).eval())
    with pytest.raises(NotImplementedError, match=r"no ONNX exporter for tinymbv2\.fusion\."
                                                  r"FusedSequential \(at 'features'\).*export "
                                                  r"the plain model"):
        to_onnx(view, tmp_path / "m.onnx", (1, 3, 32, 32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("small_input", [True, False])
def test_seed_article_net(small_input, tmp_path):
    model = randomise_bn(seed_article_net(0.5, num_classes=10, in_channels=1,
                                          small_input=small_input, seed=0))
    for fold in (True, False):
        assert_close(*run_both(model, tmp_path / "s.onnx", (2, 1, 32, 32), fold=fold))


@pytest.mark.parametrize("head", ["aspp", "simple", "lraspp"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplabv3_heads(head, output_stride, tmp_path):
    model = randomise_bn(deeplabv3_mobilenet_v2(5, output_stride=output_stride, head=head,
                                                width_mult=0.35, seed=0))
    for fold in (True, False):
        path = tmp_path / "d.onnx"
        assert_close(*run_both(model, path, (2, 3, 48, 64), fold=fold))
    graph = onnx.load(str(path)).graph
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert resizes[-1].name == "logits" and [o.name for o in graph.output] == ["logits"]
    assert len(resizes) == 2  # the image pooling branch (LR-ASPP: the high branch), the logits
    for node in resizes:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["coordinate_transformation_mode"] == b"pytorch_half_pixel"  # align_corners=False
    dilations = [onnx.helper.get_attribute_value(a) for n in graph.node if n.op_type == "Conv"
                 for a in n.attribute if a.name == "dilations"]
    assert [2, 2] in dilations  # the backbone's atrous convolutions


def test_ssdlite_raw_head_outputs(tmp_path):
    model = randomise_bn(ssdlite_mobilenet_v2(4, width_mult=0.35, size=64, seed=0))
    for fold in (True, False):
        ours, theirs = run_both(model, tmp_path / "d.onnx", (2, 3, 64, 64), fold=fold)
        assert_close(ours, theirs)
    assert theirs[0].shape == (2, ours[0].shape[1], 4) and theirs[1].shape[2] == 4
    graph = onnx.load(str(tmp_path / "d.onnx")).graph
    assert [o.name for o in graph.output] == ["head.classification_head", "head.regression_head"]


class Swish(nn.Module):
    def forward(self, x):
        return x * tinymbv2.functional.sigmoid(x)


def test_an_unsupported_layer_is_named_and_nothing_is_written(tmp_path):
    model = mobilenet_v2(0.35, num_classes=3, small_input=True, seed=0)
    model.features[3].conv[0][2] = Swish()
    path = tmp_path / "m.onnx"
    with pytest.raises(NotImplementedError, match=r"no ONNX exporter for .*Swish \(at "
                                                  r"'features\.3\.conv\.0\.2'\)"):
        to_onnx(model, path, (1, 3, 32, 32))
    assert list(tmp_path.iterdir()) == []
    # a subclass is not its base: it may compute something else
    class MyReLU6(nn.ReLU6):
        pass
    model.features[3].conv[0][2] = MyReLU6()
    with pytest.raises(NotImplementedError, match="MyReLU6"):
        to_onnx(model, path, (1, 3, 32, 32))
    assert Swish not in EXPORTERS and nn.ReLU6 in EXPORTERS


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    model = mobilenet_v2(0.35, num_classes=3, small_input=True, seed=0).eval()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous export")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("tinymbv2.atomic.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        to_onnx(model, path, (1, 3, 32, 32))
    assert path.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # the temporary was removed


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(input_shape=(3, 32, 32)), ValueError, r"input_shape \(N, C, H, W\) as four ints"),
    (dict(input_shape=(1, 3, 32, 0)), ValueError, "four ints >= 1"),
    (dict(input_shape=(1, 2, 32, 32)), ValueError, r"features\.0\.0 .*expected \(N, 3, H, W\), "
                                                   r"got a value of shape \(1, 2, 32, 32\)"),
    (dict(input_shape=(1, 3, 32, 32), opset=9), ValueError, r"opset an int in \[11, "),
    (dict(input_shape=(1, 3, 32, 32), fold="yes"), TypeError, "fold True or False"),
])
def test_bad_arguments_are_named(kwargs, error, message, tmp_path):
    model = mobilenet_v2(0.35, num_classes=3, small_input=True, seed=0)
    with pytest.raises(error, match=message):
        to_onnx(model, tmp_path / "m.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [
    dict(size=(7, 10), mode="bilinear"), dict(size=(7, 10), mode="bilinear", align_corners=True),
    dict(scale_factor=1.5, mode="bilinear"), dict(scale_factor=(2, 3), mode="bilinear", align_corners=True),
    dict(size=(7, 10), mode="nearest"), dict(scale_factor=1.5, mode="nearest"),
    dict(scale_factor=0.5, mode="bilinear"),
])
def test_upsample_every_mode(kwargs, tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Upsample(**kwargs), nn.ReLU())
    ours, theirs = run_both(model.eval(), tmp_path / "u.onnx", (2, 3, 5, 6))
    assert_close(ours, theirs)
    resize = next(n for n in onnx.load(str(tmp_path / "u.onnx")).graph.node if n.op_type == "Resize")
    assert resize.name == "1"  # the Upsample's name in the Sequential


def test_a_batch_norm_without_affine_folds_and_one_without_statistics_is_refused(tmp_path):
    bn = nn.BatchNorm2d(4, affine=False, eps=1e-3)
    bn.running_mean.data[...] = [0.5, -1.0, 0.0, 2.0]
    bn.running_var.data[...] = [0.25, 4.0, 1.0, 9.0]
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1), bn, nn.ReLU6()).eval()
    for fold in (True, False):
        assert_close(*run_both(model, tmp_path / "b.onnx", (2, 2, 9, 7), fold=fold))
        ops = [n.op_type for n in onnx.load(str(tmp_path / "b.onnx")).graph.node]
        assert ops == (["Conv", "Clip"] if fold else ["Conv", "BatchNormalization", "Clip"])
    model[1] = nn.BatchNorm2d(4, track_running_stats=False)
    with pytest.raises(NotImplementedError, match=r"to_onnx: 1 \(BatchNorm2d.*\) has no running statistics"):
        to_onnx(model, tmp_path / "c.onnx", (2, 2, 9, 7))
    assert not (tmp_path / "c.onnx").exists()
