"""What 8 bits cost the segmenter and the detector: test mIoU and mAP, float32 against int8.

    python -m benchmarks.quant_tasks --segment runs/segment --detect runs/detect
    python -m benchmarks.quant_tasks --segment runs/segment --qat-steps 20   # a quicker look

Each argument is a finished run of the CLI's default recipe (``tinymbv2 train --task segment
--dataset mnist-scenes``, ``--task detect``). The run's model is scored on its 500 test
scenes as trained (float32), then quantized as ``benchmarks/quant_accuracy.py`` quantizes the
classifiers (``tinymbv2.quant``: BatchNorm folded, int8 weights, uint8 activations with
min/max ranges calibrated on the first 64 training scenes; a ReLU6's range its known [0, 6]):

* int8 per-tensor and int8 per-channel weight scales (the quantized view, simulated in float:
  the convolutions quantized, pooling, concatenation, upsampling and the outputs float);
* the per-channel view after quantization-aware training: ``--qat-steps`` SGD steps (momentum
  0.9, ``--qat-lr``) with the run's own loss on its training batches, through the view's
  straight-through gradient;
* onnxruntime's own ``quantize_static`` of the float ONNX file (BatchNorm folded) on the same
  calibration scenes: QDQ, per channel, run by onnxruntime's int8 kernels.

Prints the segmenter's test mIoU and pixel accuracy, the detector's test mAP@0.5 and
mAP@[.5:.95], and each one's change from float32; ``--json`` writes them.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from tinymbv2 import Tensor, optim
from tinymbv2.detection import default_boxes_for, postprocess_detections
from tinymbv2.evaluation import (evaluate_detector, evaluate_segmenter, mean_average_precision,
                                 segmentation_confusion, segmentation_scores)
from tinymbv2.export import to_onnx
from tinymbv2.quant import calibrate, quantize_model
from tinymbv2.random import manual_seed
from tinymbv2.train import load_trained
from tinymbv2.train.build import build_loss
from tinymbv2.train.config import TrainConfig
from tinymbv2.train.run import detection_data, segmentation_data
from tinymbv2.train.tasks import Detection, Segmentation

CALIBRATION_SCENES = 64


def load_run(run: Path):
    """``(model, config, data)`` of a finished segmentation or detection run."""
    model, saved = load_trained(Path(run) / "model.npz")
    config = TrainConfig.from_saved(saved)
    if config.task not in ("segment", "detect"):
        raise ValueError(f"quant_tasks: expected a segmentation or detection run, got task "
                         f"{config.task!r} in {run}")
    data = (segmentation_data if config.task == "segment" else detection_data)(config)
    return model, config, data


def scores(task: str, net, data) -> dict:
    """The test scores of ``net`` (the model or a quantized view)."""
    test = data.test
    if task == "segment":
        ev = evaluate_segmenter(net, test.images, test.masks, fuse=False)
        return {"miou": ev["miou"], "pixel_accuracy": ev["pixel_accuracy"]}
    ev = evaluate_detector(net, test.images, test.targets(np.arange(len(test))), fuse=False)
    return {"map_50": ev["map_50"], "map": ev["map"]}


def qat(qnet, model, config, data, steps: int, lr: float):
    """``steps`` SGD steps of quantization-aware training of the view, with the run's loss
    on the run's training batches; the view back in eval mode after."""
    size = (data.size, data.size)
    task = (Segmentation(data.scenes.train, build_loss(config)) if config.task == "segment"
            else Detection(data.scenes.train, model, size))
    manual_seed(config.seed)
    opt = optim.SGD(qnet.parameters(), lr=lr, momentum=0.9)
    qnet.train()
    done = 0
    while done < steps:
        for images, indices in data.loader:
            if done == steps:
                break
            loss = task.loss(qnet(Tensor(np.asarray(images, np.float32))), indices)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
    qnet.eval()
    return qnet


def ort_static(task: str, model, data, calib) -> dict:
    """onnxruntime's ``quantize_static`` of the float ONNX file (QDQ, int8 weights per channel,
    uint8 activations, min/max on ``calib``), its test scores."""
    import onnxruntime
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.batches, None)

    test = data.test
    with tempfile.TemporaryDirectory() as folder:
        plain, quantized = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        to_onnx(model, plain, (1, *test.images.shape[1:]))
        quantize_static(str(plain), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        session = onnxruntime.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outputs = [session.run(None, {name: test.images[i:i + 1]}) for i in range(len(test))]
    if task == "segment":
        pred = np.concatenate([out[0].argmax(axis=1) for out in outputs])
        s = segmentation_scores(segmentation_confusion(pred, test.masks, model.num_classes))
        return {"miou": s["miou"], "pixel_accuracy": s["pixel_accuracy"]}
    size = tuple(test.images.shape[-2:])
    anchors = default_boxes_for(model, size)
    detections = []
    for cls, box in outputs:
        detections += postprocess_detections(cls, box, anchors, size)
    result = mean_average_precision(detections, test.targets(np.arange(len(test))),
                                    model.num_classes)
    return {"map_50": result["map_50"], "map": result["map"]}


def measure(run: Path, args) -> dict:
    """{row: {score: value}} of one finished run."""
    model, config, data = load_run(run)
    calib = np.asarray(data.normalize(data.scenes.train.images[:CALIBRATION_SCENES]), np.float32)
    rows = {"float32": scores(config.task, model, data)}
    print(f"{run}: float32 {rows['float32']}", flush=True)
    for weights in ("per_tensor", "per_channel"):
        qnet = calibrate(quantize_model(model, weights=weights), calib)
        rows[f"int8 {weights.replace('_', '-')}"] = scores(config.task, qnet, data)
    qat(qnet, model, config, data, args.qat_steps, args.qat_lr)
    rows[f"int8 per-channel + QAT ({args.qat_steps} steps)"] = scores(config.task, qnet, data)
    rows["onnxruntime quantize_static"] = ort_static(config.task, model, data, calib)
    return {"task": config.task, "rows": rows}


def report(result: dict) -> str:
    """The table of one run: each row's scores and their change from float32."""
    rows = result["rows"]
    names = list(rows["float32"])
    lines = [f"{'':<36}" + "".join(f"{n:>16}{'change':>9}" for n in names)]
    for row, s in rows.items():
        lines.append(f"{row:<36}" + "".join(f"{s[n]:>16.4f}{s[n] - rows['float32'][n]:>+9.4f}"
                                           for n in names))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segment", type=Path, help="a finished --task segment run")
    parser.add_argument("--detect", type=Path, help="a finished --task detect run")
    parser.add_argument("--qat-steps", type=int, default=60)
    parser.add_argument("--qat-lr", type=float, default=1e-3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs = [r for r in (args.segment, args.detect) if r is not None]
    if not runs:
        parser.error("expected --segment RUN and/or --detect RUN")
    results = {}
    for run in runs:
        results[str(run)] = measure(run, args)
        print(f"\n{run} ({results[str(run)]['task']}), {CALIBRATION_SCENES} calibration scenes:")
        print(report(results[str(run)]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
