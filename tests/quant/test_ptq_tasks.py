"""The quantized views of the segmenter and the detector: without quantization each is its
network with the BatchNorms folded (float64, to rounding), every conv quantized; calibrated,
onnxruntime runs its QDQ file to the same outputs; ``evaluate_segmenter`` and
``evaluate_detector`` take a view as they take the model; quantization-aware training's
gradient reaches every folded weight of a segmenter and leaves the model as it was."""
import tempfile
from pathlib import Path

import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor, nn, optim
from tinymbv2 import functional as F
from tinymbv2.evaluation import evaluate_detector, evaluate_segmenter
from tinymbv2.models import deeplabv3_mobilenet_v2, ssdlite_mobilenet_v2
from tinymbv2.quant import Int8Net, calibrate, quantize_model, to_qdq_onnx
from tinymbv2.quant.ptq import ActQuant, QuantConv2d

SIZE = 64
MODELS = {
    "aspp-16": lambda: deeplabv3_mobilenet_v2(5, 16, "aspp", width_mult=0.35, seed=0),
    "simple-8": lambda: deeplabv3_mobilenet_v2(5, 8, "simple", width_mult=0.35, seed=0),
    "lraspp-16": lambda: deeplabv3_mobilenet_v2(5, 16, "lraspp", width_mult=0.35, seed=0),
    "ssdlite": lambda: ssdlite_mobilenet_v2(4, width_mult=0.35, size=SIZE, seed=0),
}


def _images(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE))


def _trained_like(name, dtype=np.float64, seed=0):
    """The model with the statistics a trained one has: every BatchNorm's running mean and
    variance those of one batch (a fresh model's are 0 and 1, and its deeper maps fade to
    1e-20), its scales and shifts random; in eval mode."""
    model = MODELS[name]().to(dtype=dtype)
    rng = np.random.default_rng(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None                       # cumulative: after one batch, its statistics
        m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
        m.bias.data[...] = rng.normal(0, 0.2, m.num_features)
    model.train()
    with tinymbv2.no_grad():
        model(Tensor(_images(8, seed + 100).astype(dtype)))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def _outputs(net, x):
    with tinymbv2.no_grad():
        out = net(Tensor(x))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("name", list(MODELS))
def test_the_view_without_quantization_is_the_folded_network(name):
    model = _trained_like(name)
    qnet = quantize_model(model)
    qnet.set_quantize(False)
    x = _images(2, 1)
    for want, got in zip(_outputs(model, x), _outputs(qnet, x)):
        assert np.abs(want).max() > 0.1
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qnet.modules())
    convs = sum(type(m) is nn.Conv2d for m in model.modules())
    assert sum(isinstance(m, QuantConv2d) for m in qnet.modules()) == convs
    assert not any(type(m) is nn.Conv2d for m in qnet.modules())


@pytest.mark.parametrize("name", list(MODELS))
def test_the_calibrated_views_qdq_file_computes_what_the_view_computes(name):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _trained_like(name, np.float32)
    x = _images(4, 2).astype(np.float32)
    qnet = calibrate(quantize_model(model), x)
    assert all(m.scale is not None and np.all(m.scale > 0) for m in qnet.act_quants())
    ours, floats = _outputs(qnet, x), _outputs(model, x)
    with tempfile.TemporaryDirectory() as folder:
        path = to_qdq_onnx(qnet, Path(folder) / "q.onnx", x.shape)
        ops = [node.op_type for node in onnx.load(str(path)).graph.node]
        # node by node, as the file says (onnxruntime's optimised run turns the Q/DQ pairs
        # into int8 kernels whose int32 bias rounds differently; a random network, unlike a
        # trained one, amplifies those steps: the trained networks are compared in
        # benchmarks/quant_tasks.py)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
        theirs = session.run(None, {session.get_inputs()[0].name: x})
    assert ops.count("QuantizeLinear") == len(qnet.act_quants())
    convs = sum(isinstance(m, QuantConv2d) for m in qnet.modules())
    assert ops.count("DequantizeLinear") == len(qnet.act_quants()) + convs
    for a, b, f in zip(ours, theirs, floats):
        top = np.abs(f).max()
        assert np.abs(a - f).max() > 1e-3 * top             # quantized
        assert np.mean(np.abs(a - b) <= 1e-5 * top) >= 0.95  # a rare tie rounds a step away
        assert np.abs(a - b).max() <= 0.01 * top


def test_int8net_refuses_a_segmenters_view():
    qnet = quantize_model(_trained_like("lraspp-16", np.float32))
    with pytest.raises(TypeError, match="QuantizedNet of a MobileNetV2"):
        Int8Net.from_view(qnet)


def test_evaluate_segmenter_takes_the_view_as_the_model():
    model = _trained_like("aspp-16")
    x = _images(3, 3)
    masks = np.random.default_rng(4).integers(0, 5, (3, SIZE, SIZE))
    qnet = quantize_model(model)
    qnet.set_quantize(False)
    want = evaluate_segmenter(model, x, masks, fuse=False)
    got = evaluate_segmenter(qnet, x, masks, fuse=False)
    assert qnet.num_classes == 5
    np.testing.assert_array_equal(got["predictions"], want["predictions"])
    assert got["miou"] == pytest.approx(want["miou"], abs=1e-12)


def test_evaluate_detector_takes_the_view_as_the_model():
    model = _trained_like("ssdlite")
    x = _images(2, 5)
    targets = [{"boxes": np.array([[4.0, 6.0, 30.0, 40.0]]), "labels": np.array([1 + k])}
               for k in range(2)]
    qnet = quantize_model(model)
    qnet.set_quantize(False)
    want = evaluate_detector(model, x, targets, fuse=False)
    got = evaluate_detector(qnet, x, targets, fuse=False)
    assert qnet.feature_map_sizes(SIZE, SIZE) == model.feature_map_sizes(SIZE, SIZE)
    for a, b in zip(got["detections"], want["detections"]):
        np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-9)
        np.testing.assert_array_equal(a["labels"], b["labels"])
    assert got["map"] == pytest.approx(want["map"], abs=1e-12)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-9)


def test_quantization_aware_training_of_a_segmenter_moves_every_folded_weight():
    model = _trained_like("lraspp-16", np.float32)
    first = np.array(model.backbone[0][0].weight.data)
    x = _images(4, 6).astype(np.float32)
    masks = np.random.default_rng(7).integers(0, 5, (4, SIZE, SIZE))
    qnet = calibrate(quantize_model(model), x)
    qnet.train()
    loss = F.cross_entropy(qnet(Tensor(x)), masks)
    opt = optim.SGD(qnet.parameters(), lr=0.01)
    opt.zero_grad()
    loss.backward()
    layers = [m for m in qnet.modules() if isinstance(m, QuantConv2d)]
    assert all(np.abs(m.weight.grad).max() > 0 for m in layers)
    before = [np.array(m.weight.data) for m in layers]
    opt.step()
    assert all(not np.array_equal(b, m.weight.data) for b, m in zip(before, layers))
    assert np.array_equal(first, model.backbone[0][0].weight.data)   # the model untouched
    assert sum(isinstance(m, ActQuant) and m.fixed_range == (0.0, 1.0) for m in qnet.modules()) == 1
