"""Folder datasets through the command line: grey or RGB as the model needs, mixed sizes
resized by --image-size, 16-bit files scaled (issue 20, item 7)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tinymbv2.cli import main
from tinymbv2.train import load_state

QUICK = ["--width", "0.35", "--batch-size", "16", "--optimizer", "adam", "--lr", "0.005",
         "--schedule", "cosine", "--shift", "0", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """A 1-channel (grey) model of 8x8 images."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", "--dataset", "digits", *QUICK, "--out", str(out)]) == 0
    return out / "model.npz"


def _folder(root, mode, sizes, n=6):
    """Two classes of ``n`` images each: class b brighter than class a."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            shape = (h, w) if mode == "L" else (h, w, 3)
            pixels = rng.integers(0, 100, shape) + 150 * label
            Image.fromarray(pixels.astype(np.uint8), mode=mode).save(root / cls / f"{i}.png")
    return root


def _config(run) -> dict:
    return load_state(run / "model.npz")["config"]


def test_finetune_a_grey_model_on_a_grey_folder(digits_checkpoint, tmp_path):
    grey = _folder(tmp_path / "grey", "L", [(8, 8)])
    out = tmp_path / "ft"
    assert main(["finetune", str(digits_checkpoint), "--dataset", "folder", "--data-dir", str(grey),
                 *QUICK, "--out", str(out)]) == 0
    config = _config(out)
    assert (config["in_channels"], config["channels"], config["num_classes"]) == (1, 1, 2)


def test_finetune_reads_an_rgb_folder_of_mixed_sizes_as_the_model_needs(digits_checkpoint, tmp_path):
    rgb = _folder(tmp_path / "rgb", "RGB", [(8, 8), (12, 10), (20, 20)])
    out = tmp_path / "ft"
    assert main(["finetune", str(digits_checkpoint), "--dataset", "folder", "--data-dir", str(rgb),
                 *QUICK, "--out", str(out)]) == 0
    config = _config(out)
    assert config["in_channels"] == 1 and config["input_size"] == [8, 8]  # the checkpoint's


def test_train_eval_predict_on_a_folder_with_channels_and_image_size(tmp_path, capsys):
    from PIL import Image

    rgb = _folder(tmp_path / "rgb", "RGB", [(9, 9), (12, 10), (16, 16)])
    run = tmp_path / "run"
    argv = ["train", "--dataset", "folder", "--data-dir", str(rgb), *QUICK, "--out", str(run)]
    assert main(argv) == 2  # mixed sizes need --image-size, and say so
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "differ in size" in err and "give --image-size" in err
    assert main(argv + ["--image-size", "8", "--channels", "1"]) == 0
    config = _config(run)
    assert (config["in_channels"], config["input_size"], config["channels"]) == (1, [8, 8], 1)
    capsys.readouterr()
    assert main(["eval", str(run / "model.npz"), "--dataset", "folder", "--data-dir", str(rgb)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"accuracy {metrics['test_accuracy']:.4f}" in capsys.readouterr().out
    scan = tmp_path / "scan16.png"  # a 16-bit grey scan, of another size
    Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)).save(scan)
    assert main(["predict", str(run / "model.npz"), str(scan), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{scan}: ") and {p.split()[0] for p in line.split(": ")[1].split(", ")} == {"a", "b"}
