"""What 8 bits cost a classifier, and the paper's ReLU6 claim tested: PTQ and QAT accuracy.

    python -m benchmarks.quant_accuracy                          # trains both networks (minutes)
    python -m benchmarks.quant_accuracy --runs runs/q6 runs/q0   # two finished runs: ReLU6, ReLU
    python -m benchmarks.quant_accuracy --epochs 2 --width 0.35  # a quick look

The paper chose ReLU6 "because of its robustness when used with low-precision computation"
(section 3.2). Here the same network, data and recipe are trained twice, once with ReLU6 and
once with ReLU in every layer that has an activation (``tinymbv2 train --activation``), and
both are quantized the same ways with ``tinymbv2.quant`` (BatchNorm folded, int8 weights,
uint8 activations, calibrated on 512 training images): per-tensor or per-channel weight
scales, activation ranges from min/max, percentiles or the smallest squared error (a ReLU6's
range is its known [0, 6]); the per-channel min/max network run in integers (``Int8Net``);
onnxruntime's own ``quantize_static`` of the same network on the same calibration images
(QDQ, per channel); then quantization-aware training (one epoch through the per-channel view,
the straight-through gradient, SGD at a small learning rate). Prints the test accuracy of
each and its drop from the float network's; ``--json`` writes them.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from tinymbv2 import Tensor, optim
from tinymbv2 import functional as F
from tinymbv2.cli import main as cli
from tinymbv2.data import load_dataset
from tinymbv2.evaluation import evaluate
from tinymbv2.export import to_onnx
from tinymbv2.quant import Int8Net, calibrate, quantize_model
from tinymbv2.random import manual_seed
from tinymbv2.train import load_trained

SCHEMES = (("per_tensor", "minmax"), ("per_channel", "minmax"), ("per_channel", "percentile"),
           ("per_channel", "mse"))


def train_run(activation, args, out):
    """Train one network with ``activation``, the recipe of ``args``, into ``out``."""
    argv = ["train", "--dataset", args.dataset, "--width", str(args.width), "--epochs",
            str(args.epochs), "--batch-size", "64", "--optimizer", "sgd", "--lr", str(args.lr),
            "--weight-decay", "5e-4", "--schedule", "onecycle", "--activation", activation,
            "--seed", str(args.seed), "--no-progress", "--out", str(out)]
    if cli(argv) != 0:
        raise RuntimeError(f"quant_accuracy: training {activation} failed")
    return out


def split_arrays(config):
    """(calibration images, train images, train labels, test images, test labels), normalised."""
    data = load_dataset(config["dataset"], None, config["input_size"][0],
                        channels=config["in_channels"])
    shape = (1, -1, 1, 1)
    mean = np.asarray(config["norm_mean"], np.float32).reshape(shape)
    std = np.asarray(config["norm_std"], np.float32).reshape(shape)

    def norm(x):
        return ((x - mean) / std).astype(np.float32)

    train = norm(data.train.images)
    return train[:512], train, data.train.labels, norm(data.test.images), data.test.labels


def qat_epoch(qnet, images, labels, lr, batch_size=64, seed=0):
    """One epoch of quantization-aware training of the view, in place (dropout's masks from
    ``seed`` too, so a rerun gives the same scores)."""
    manual_seed(seed)
    qnet.train()
    opt = optim.SGD(qnet.parameters(), lr=lr, momentum=0.9)
    order = np.random.default_rng(seed).permutation(len(images))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        loss = F.cross_entropy(qnet(Tensor(images[idx])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    qnet.eval()
    return qnet


def measure(checkpoint, args):
    """{scheme: test accuracy} of one trained network: float, PTQ schemes, QAT."""
    model, config = load_trained(checkpoint)
    calib, train_x, train_y, test_x, test_y = split_arrays(config)
    scores = {"float32": evaluate(model, test_x, test_y, fuse=False)["accuracy"]}
    for weights, observer in SCHEMES:
        qnet = calibrate(quantize_model(model, weights=weights, observer=observer), calib)
        scores[f"{weights} {observer}"] = evaluate(qnet, test_x, test_y, fuse=False)["accuracy"]
    qnet = calibrate(quantize_model(model), calib)
    scores["per_channel minmax, in int8"] = accuracy(Int8Net.from_view(qnet)(test_x), test_y)
    scores["onnxruntime quantize_static"] = accuracy(ort_static(model, calib, test_x), test_y)
    qat_epoch(qnet, train_x, train_y, args.qat_lr, seed=args.seed)
    scores["per_channel minmax + QAT"] = evaluate(qnet, test_x, test_y, fuse=False)["accuracy"]
    return config["activation"], scores


def accuracy(logits, labels) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def ort_static_outputs(model, calib, images) -> list:
    """onnxruntime's own post-training quantization of the same network (the float ONNX file,
    BatchNorm folded) on the same calibration images: ``quantize_static``, QDQ, int8 weights
    per channel, uint8 activations, min/max calibration; run on ``images`` one at a time.

    Returns:
        Each image's list of outputs (a classifier's logits; a segmenter's; a detector's
        two).
    """
    import onnxruntime
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as folder:
        plain, quantized = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        to_onnx(model, plain, (1, *images.shape[1:]))
        quantize_static(str(plain), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        session = onnxruntime.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return [session.run(None, {name: images[i:i + 1]}) for i in range(len(images))]


def ort_static(model, calib, images):
    """The logits of ``ort_static_outputs``, (N, classes)."""
    return np.concatenate([out[0] for out in ort_static_outputs(model, calib, images)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs=2, metavar=("RELU6_RUN", "RELU_RUN"),
                        help="two finished runs (folders with model.npz) instead of training")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--qat-lr", type=float, default=0.002)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/quant_accuracy")
    parser.add_argument("--json", help="write the scores here")
    args = parser.parse_args(argv)
    if args.runs:
        runs = [Path(r) for r in args.runs]
    else:
        runs = [train_run(act, args, Path(args.out) / act) for act in ("relu6", "relu")]
    table = dict(measure(run / "model.npz", args) for run in runs)
    print(f"test accuracy ({args.dataset}); in brackets the drop from the float network's")
    names = list(next(iter(table.values())))
    print(f"{'':<28}" + "".join(f"{act:>18}" for act in table))
    for name in names:
        cells = "".join(f"{s[name]:>10.4f} ({s['float32'] - s[name]:+.4f})" if name != "float32"
                        else f"{s[name]:>18.4f}" for s in table.values())
        print(f"{name:<28}{cells}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))
    return table


if __name__ == "__main__":
    main()
