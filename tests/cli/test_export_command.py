"""``tinymbv2 export``: a checkpoint a short run writes, exported; onnxruntime gives the
checkpoint's logits; errors are one line with exit code 2."""
import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2.cli import main
from tinymbv2.train import TrainConfig, load_trained
from tinymbv2.train.build import build_model
from tinymbv2.train.checkpoint import save_checkpoint

RECIPE = ["--dataset", "digits", "--width", "0.35", "--batch-size", "128", "--optimizer", "adam",
          "--lr", "0.005", "--schedule", "cosine", "--shift", "0", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", *RECIPE, "--epochs", "1", "--out", str(out)]) == 0
    return out / "model.npz"


@pytest.mark.parametrize("extra", [[], ["--no-fold", "--opset", "13", "--batch-size", "3"]])
def test_export_writes_a_graph_that_gives_the_checkpoints_logits(checkpoint, extra, tmp_path,
                                                                capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(out), *extra]) == 0
    printed = capsys.readouterr().out
    model, cfg = load_trained(checkpoint)
    batch = 3 if extra else 1
    shape = (batch, cfg["in_channels"], *cfg["input_size"])  # digits: 1 channel, 8 x 8
    assert shape == (batch, 1, 8, 8)
    assert printed.startswith(f"wrote {out}: MobileNetV2, opset {13 if extra else 17}, BatchNorm "
                              f"{'kept' if extra else 'folded'}; input 'input' {batch}x1x8x8")
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    ops = {node.op_type for node in proto.graph.node}
    assert ("BatchNormalization" in ops) == bool(extra)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["norm_mean"]) == cfg["norm_mean"] and meta["task"] == "classify"
    assert json.loads(meta["class_names"]) == cfg["class_names"]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with tinymbv2.no_grad():
        expected = model(Tensor(x)).data
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert got.shape == (batch, cfg["num_classes"]) == (batch, 10)
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("task, options", [("segment", dict(head="lraspp")),
                                           ("segment", dict(head="aspp")), ("detect", {})])
def test_a_segmenters_and_a_detectors_checkpoint(task, options, tmp_path, capsys):
    # the checkpoint a run of this task writes, its weights untrained (training one takes a minute)
    config = TrainConfig(task=task, dataset="mnist-scenes", width=0.35, image_size=64,
                         **options).validate()
    saved = {**dataclasses.asdict(config), "num_classes": 11, "in_channels": 1,
             "input_size": [64, 64], "class_names": ["background", *map(str, range(10))],
             "norm_mean": [0.1], "norm_std": [0.3]}
    checkpoint = save_checkpoint(tmp_path / "model.npz", build_model(config, 1, 11), config=saved)
    out = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(out), "--batch-size", "2"]) == 0
    model, _ = load_trained(checkpoint)
    kind = {"segment": "DeepLabV3", "detect": "SSDLite"}[task]
    assert capsys.readouterr().out.startswith(f"wrote {out}: {kind}, opset 17, BatchNorm folded; "
                                              "input 'input' 2x1x64x64 float32")
    x = np.random.default_rng(0).standard_normal((2, 1, 64, 64)).astype(np.float32)
    with tinymbv2.no_grad():
        expected = model(Tensor(x))
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["task"] == task
    got = session.run(None, {"input": x})
    assert len(got) == len(expected) == (2 if task == "detect" else 1)
    for ours, theirs in zip(expected, got):
        assert theirs.shape == ours.shape and theirs.shape[0] == 2
        assert np.abs(theirs - ours.data).max() <= 1e-5 * np.abs(ours.data).max()
    if task == "segment":
        assert got[0].shape == (2, 11, 64, 64)


@pytest.mark.parametrize("argv, message", [
    (["export", "missing.npz", "--onnx", "m.onnx"], "no checkpoint file at missing.npz"),
    (["export", "CKPT", "--onnx", "m.onnx", "--opset", "9"], "expected opset an int in [11, "),
    (["export", "CKPT"], "the following arguments are required: --onnx"),
])
def test_export_errors_are_one_line_with_exit_code_2(checkpoint, argv, message, tmp_path,
                                                     capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [str(checkpoint) if a == "CKPT" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert err.startswith("tinymbv2 export: error: ")
    assert not (tmp_path / "m.onnx").exists()
