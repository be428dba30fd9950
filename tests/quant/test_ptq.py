"""The quantized view of a classifier: without quantization it is the network with its
BatchNorms folded (float64, to rounding); calibrated, its weights are int8 per channel and
its ReLU6 outputs uint8 on [0, 6]; on a trained digits classifier per-channel PTQ keeps the
accuracy and per-tensor weights lose it (MobileNetV2's depthwise layers, their BatchNorms
folded, have channels of very different ranges); quantization-aware training's gradient
reaches the folded weights; what has no quantized form is refused by name."""
import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor, nn, optim
from tinymbv2 import functional as F
from tinymbv2.cli import main
from tinymbv2.data import load_dataset
from tinymbv2.evaluation import evaluate
from tinymbv2.models import mobilenet_v2
from tinymbv2.quant import calibrate, quantize_model
from tinymbv2.quant.ptq import ActQuant, QuantConv2d, QuantLinear, quantized_weight, weight_qparams
from tinymbv2.train import load_trained


def _random_model(seed=0, activation="relu6"):
    """MobileNetV2-0.35 for 1-channel 12 px images, BatchNorm statistics and the classifier
    made random (a fresh model's are 0, 1 and tiny), in eval mode."""
    model = mobilenet_v2(width_mult=0.35, num_classes=5, in_channels=1, small_input=True,
                         seed=seed, activation=activation)
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.data[...] = rng.normal(0, 0.2, m.num_features)
            m.running_var.data[...] = rng.uniform(0.5, 2.0, m.num_features)
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[...] = rng.normal(0, 0.2, m.num_features)
    model.classifier[1].weight.data[...] = rng.normal(0, 0.3, model.classifier[1].weight.shape)
    return model.eval()


def test_the_view_without_quantization_is_the_folded_float_network():
    model = _random_model().double()
    qnet = quantize_model(model)
    qnet.set_quantize(False)
    x = np.random.default_rng(1).standard_normal((3, 1, 12, 12))
    with tinymbv2.no_grad():
        want, got = model(Tensor(x)).data, qnet(Tensor(x)).data
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qnet.modules())
    assert sum(isinstance(m, QuantConv2d) for m in qnet.modules()) == 52  # every conv, folded


def test_calibrated_weights_are_int8_per_channel_and_relu6_outputs_uint8_on_0_6():
    model = _random_model()
    x = np.random.default_rng(2).standard_normal((16, 1, 12, 12)).astype(np.float32)
    qnet = calibrate(quantize_model(model), x, batch_size=6)
    conv = next(m for m in qnet.modules() if isinstance(m, QuantConv2d))
    w = quantized_weight(conv).data
    scale, zero, axis = weight_qparams(np.asarray(conv.weight.data), "per_channel")
    assert axis == 0 and np.all(zero == 0)
    steps = w / scale.astype(np.float32).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-3)   # whole int8 steps
    assert np.rint(steps).min() >= -128 and np.rint(steps).max() <= 127
    acts = qnet.act_quants()
    relu6 = [a for a in acts if a.fixed_range == (0.0, 6.0)]
    assert len(relu6) == 35 and all(a.scale == pytest.approx(6 / 255) and a.zero_point == 0
                                    for a in relu6)
    observed = [a for a in acts if a.observer is not None]
    residuals = sum(block.use_res_connect for block in model.blocks)  # 11 at width 0.35
    assert len(observed) == 1 + 17 + residuals  # the input, 17 projections, the residual sums
    assert all(a.mode == "quantize" and a.observer.batches == 3 for a in observed)
    lo, hi = qnet.input_quant.observer.range()
    assert (lo, hi) == (float(x.min()), float(x.max()))
    with tinymbv2.no_grad():
        out = qnet(Tensor(x[:4])).data
    assert out.shape == (4, 5) and np.all(np.isfinite(out))


def test_relu6_range_false_and_a_relu_network_observe_their_activations():
    x = np.random.default_rng(3).standard_normal((8, 1, 12, 12)).astype(np.float32)
    for model, kw in ((_random_model(), {"relu6_range": False}),
                      (_random_model(activation="relu"), {})):
        qnet = calibrate(quantize_model(model, observer="percentile", percentile=99.9, **kw), x)
        acts = qnet.act_quants()
        assert len(acts) == 35 + 18 + 11 and all(a.observer is not None for a in acts)
        assert all(a.observer.range()[0] >= 0 for a in acts[1:3])  # after the stem's activation


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A MobileNetV2-0.35 trained on the digits for 6 epochs (about 6 s), and the data."""
    out = tmp_path_factory.mktemp("ptq") / "digits"
    assert main(["train", "--dataset", "digits", "--width", "0.35", "--epochs", "6", "--lr", "0.1",
                 "--no-progress", "--out", str(out)]) == 0
    model, cfg = load_trained(out / "model.npz")
    data = load_dataset("digits", None, None, channels=1)
    mean, std = (np.array(cfg[k], np.float32).reshape(1, -1, 1, 1) for k in ("norm_mean", "norm_std"))
    norm = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    return model, norm(data.train.images[:256]), norm(data.test.images), data.test.labels


def test_per_channel_ptq_keeps_a_trained_classifiers_accuracy_and_per_tensor_rounds_coarser(
        digits_model):
    """Per-channel PTQ keeps the float model's accuracy and predictions. Per tensor, every
    channel's weights are rounded on the grid of the layer's largest one, never a finer
    one: each channel's rounding error bound is at least per-channel's, and larger in some
    channel of every layer whose channels' ranges differ. How much accuracy that costs
    depends on the weights training left (on the Intel host of 2026-12-06 per tensor lost
    more than 20 points; on the AMD host of 2026-12-07 the same recipe's trajectory kept
    94.7%, as per channel did), so
    only its agreement with the float model is bounded by per-channel's."""
    model, calib, images, labels = digits_model
    base = evaluate(model, images, labels, fuse=False)
    assert base["accuracy"] > 0.5
    scores, views = {}, {}
    for weights in ("per_channel", "per_tensor"):
        qnet = views[weights] = calibrate(quantize_model(model, weights=weights), calib)
        result = evaluate(qnet, images, labels, fuse=False)
        agree = float(np.mean(result["predictions"] == base["predictions"]))
        scores[weights] = (result["accuracy"], agree)
    accuracy, agree = scores["per_channel"]
    assert accuracy >= base["accuracy"] - 0.03 and agree >= 0.9
    assert scores["per_tensor"][1] <= agree + 0.02
    coarser = 0
    for layer_pc, layer_pt in zip(*(
            [m for m in views[w].modules() if type(m) is QuantConv2d] for w in views)):
        w = np.asarray(layer_pc.weight.data)
        assert np.array_equal(w, layer_pt.weight.data)  # the same folded weight
        s_pc = np.asarray(weight_qparams(w, "per_channel")[0])
        s_pt = float(weight_qparams(w, "per_tensor")[0])
        assert np.all(s_pt >= s_pc * (1 - 1e-6))
        coarser += bool(np.any(s_pt > s_pc * 1.01))
    assert coarser >= 40  # nearly every one of the network's 52 convolutions


def test_quantization_aware_training_moves_the_folded_weights(digits_model):
    model, calib, _, _ = digits_model
    stem = np.array(model.features[0][0].weight.data)
    qnet = calibrate(quantize_model(model), calib)
    qnet.train()
    opt = optim.SGD(qnet.parameters(), lr=0.01, momentum=0.9)
    labels = load_dataset("digits", None, None, channels=1).train.labels[:64]
    before = [np.array(p.data) for p in qnet.parameters()]
    loss = F.cross_entropy(qnet(Tensor(calib[:64])), labels)
    opt.zero_grad()
    loss.backward()
    layers = [m for m in qnet.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert all(np.all(np.isfinite(m.weight.grad)) and np.abs(m.weight.grad).max() > 0
               for m in layers)
    opt.step()
    assert all(not np.array_equal(b, np.asarray(p.data)) for b, p in zip(before, qnet.parameters()))
    assert np.array_equal(stem, np.asarray(model.features[0][0].weight.data))  # model untouched


def test_what_has_no_quantized_form_is_refused():
    with pytest.raises(TypeError, match="expected a MobileNetV2 classifier, a DeepLabV3 or an "
                                        "SSDLite, got Sequential"):
        quantize_model(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    with pytest.raises(TypeError, match="not a fused view"):
        quantize_model(tinymbv2.fuse(_random_model()))
    with pytest.raises(TypeError, match="expansion-shortcut"):
        quantize_model(mobilenet_v2(width_mult=0.35, shortcut="expansion").eval())
    with pytest.raises(ValueError, match="expected observer in"):
        quantize_model(_random_model(), observer="kl")
    with pytest.raises(ValueError, match="expected weights in"):
        quantize_model(_random_model(), weights="per_group")
    with pytest.raises(ValueError, match="at least one calibration image"):
        calibrate(quantize_model(_random_model()), np.zeros((0, 1, 12, 12), np.float32))
    with pytest.raises(ValueError, match="exactly one"):
        ActQuant()


def test_the_qdq_onnx_file_computes_what_the_view_computes(digits_model, tmp_path):
    import onnx
    import onnxruntime as ort

    from tinymbv2.quant.onnx_qdq import to_qdq_onnx

    model, calib, images, labels = digits_model
    qnet = calibrate(quantize_model(model), calib)
    path = to_qdq_onnx(qnet, tmp_path / "q.onnx", images.shape)
    proto = onnx.load(path)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") == len(qnet.act_quants())
    assert ops.count("DequantizeLinear") == len(qnet.act_quants()) + 53  # + 52 convs, 1 Linear
    assert "BatchNormalization" not in ops
    weights = {t.name: t for t in proto.graph.initializer}
    assert weights["body.features.0.0.weight_quantized"].data_type == onnx.TensorProto.INT8
    with tinymbv2.no_grad():
        ours = qnet(Tensor(images)).data
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    theirs = ort.InferenceSession(str(path), plain, providers=["CPUExecutionProvider"]).run(
        None, {"input": images})[0]
    # the same float graph: apart from rounding ties (x / s against x * (1 / s)) the same
    assert np.mean(theirs.argmax(1) == ours.argmax(1)) >= 0.99
    assert np.median(np.abs(theirs - ours)) <= 1e-3 * np.abs(ours).max()
    with pytest.raises(ValueError, match="calibrate the view first"):
        to_qdq_onnx(quantize_model(model), tmp_path / "r.onnx", images.shape)
    assert not (tmp_path / "r.onnx").exists()


def test_the_int8_network_agrees_with_onnxruntimes_int8_execution(digits_model, tmp_path):
    import onnxruntime as ort

    from tinymbv2.quant.int8_net import Int8Net
    from tinymbv2.quant.onnx_qdq import to_qdq_onnx

    model, calib, images, labels = digits_model
    qnet = calibrate(quantize_model(model), calib)
    int8 = Int8Net.from_view(qnet)
    ours = int8(images)
    path = to_qdq_onnx(qnet, tmp_path / "q.onnx", images.shape)
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": images})[0]   # optimised: onnxruntime's own int8 kernels
    assert np.mean(ours.argmax(1) == theirs.argmax(1)) >= 0.99
    assert np.median(np.abs(ours - theirs)) <= 1e-2 * np.abs(theirs).max()
    with tinymbv2.no_grad():
        view = qnet(Tensor(images)).data
    assert np.mean(ours.argmax(1) == view.argmax(1)) >= 0.9   # the float simulation: near
    floats = sum(np.asarray(p.data).nbytes for p in model.parameters())
    assert int8.weight_bytes() < floats / 3
    with pytest.raises(ValueError, match="calibrate the view first"):
        Int8Net.from_view(quantize_model(model))


def test_the_int8_networks_logits_are_its_integers_tail_in_float64_to_float32_rounding(
        digits_model):
    """The tail after the last map (pool, Linear) is float: the logits equal the same
    integers' tail in float64 but for float32's rounding: the pooled means (the exact mean
    rounded once) and the product's float32 sum over 1280 features, at most a few float32
    steps of the largest term sum."""
    from tinymbv2.quant.int8_net import Int8Net

    model, calib, images, _ = digits_model
    int8 = Int8Net.from_view(calibrate(quantize_model(model), calib))
    q, s, z = int8.features(images)
    weight, bias = int8.classifier
    pooled = ((q.astype(np.float64) - float(z)) * float(s)).mean(axis=(2, 3))
    exact = pooled @ weight.astype(np.float64).T + bias
    bound = np.abs(pooled) @ np.abs(weight.astype(np.float64)).T + np.abs(bias)
    ours = int8(images)
    assert ours.dtype == np.float32 and ours.shape == exact.shape
    error = np.abs(ours - exact)
    assert np.all(error <= 4 * np.finfo(np.float32).eps * bound)
    assert error.max() > 0   # float32: not the float64 values


def test_the_int8_network_saves_and_loads_as_integers(digits_model, tmp_path):
    from tinymbv2.quant.int8_net import Int8Net

    model, calib, images, _ = digits_model
    int8 = Int8Net.from_view(calibrate(quantize_model(model), calib))
    path = int8.save(tmp_path / "int8.npz")
    again = Int8Net.load(path)
    np.testing.assert_array_equal(again(images), int8(images))
    with np.load(path) as data:
        assert data["0.0.wq"].dtype == np.int8 and data["0.0.y_zero_point"].dtype == np.uint8
    floats = sum(np.asarray(p.data).nbytes for p in model.parameters())
    assert path.stat().st_size < floats / 2
    assert [p.name for p in tmp_path.iterdir()] == ["int8.npz"]  # no temporary left
