"""tinymbv2.evaluation.prediction: image files prepared like the training data, top-k classes."""
from __future__ import annotations

import numpy as np
import pytest

import tinymbv2.fusion
from tinymbv2.data import Resize
from tinymbv2.evaluation import load_image, predict
from tinymbv2.models import mobilenet_v2


def _png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


def test_load_image_scales_inverts_and_resizes(tmp_path):
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    path = _png(tmp_path / "a.png", pixels)
    x = load_image(path, 1, None)
    assert x.shape == (1, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], pixels / 255.0, rtol=1e-6)
    np.testing.assert_allclose(load_image(path, 1, None, invert=True), 1.0 - x, rtol=1e-6)
    big = load_image(path, 1, [28, 28])
    np.testing.assert_array_equal(big, Resize(28)(x[None])[0])
    rgb = load_image(path, 3, None)
    assert rgb.shape == (3, 8, 8) and np.array_equal(rgb[0], rgb[2])
    with pytest.raises(FileNotFoundError, match="predict: no image file at"):
        load_image(tmp_path / "missing.png", 1, None)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png is not a readable image"):
        load_image(tmp_path / "bad.png", 1, None)


def _model_and_config():
    model = mobilenet_v2(width_mult=0.35, num_classes=3, in_channels=1, small_input=True, seed=0)
    model.eval()
    config = {"in_channels": 1, "input_size": [8, 8], "norm_mean": [0.5], "norm_std": [0.25],
              "class_names": ["a", "b", "c"]}
    return model, config


def test_predict_gives_sorted_probabilities_through_fuse_by_default(tmp_path, monkeypatch):
    model, config = _model_and_config()
    rng = np.random.default_rng(0)
    paths = [_png(tmp_path / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
             for i in range(2)]
    fused_models = []

    def fuse(m):
        fused_models.append(m)
        return m

    monkeypatch.setattr(tinymbv2.fusion, "fuse", fuse)
    results = predict(model, config, paths, top_k=2)
    assert fused_models == [model]
    assert [r["path"] for r in results] == [str(p) for p in paths]
    for r in results:
        names, probs = zip(*r["top"])
        assert len(names) == 2 and set(names) <= {"a", "b", "c"}
        assert list(probs) == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    plain = predict(model, config, paths, top_k=3, fuse=False)
    assert fused_models == [model]  # fuse=False: fusion.fuse is not called
    for r, p in zip(results, plain):
        assert r["top"] == p["top"][:2]
        assert sum(q for _, q in p["top"]) == pytest.approx(1.0, rel=1e-5)
    assert not model.training  # predict leaves the mode as it found it


def test_load_image_scales_16_bit_files_and_refuses_huge_ones(tmp_path, monkeypatch):
    from tinymbv2.data import readers

    pixels16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024)  # 0 .. 64512 of 65535
    path = _png(tmp_path / "scan16.png", pixels16)
    x = load_image(path, 1, None)
    np.testing.assert_allclose(x[0], pixels16 / 65535.0, rtol=1e-6)
    assert x.max() < 1.0  # read as 8 bits, all but one of these pixels were clipped to 1.0
    np.testing.assert_allclose(load_image(path, 1, None, invert=True), 1.0 - x, rtol=1e-6)
    assert load_image(path, 3, [4, 4]).shape == (3, 4, 4)
    monkeypatch.setattr(readers, "MAX_IMAGE_PIXELS", 63)
    with pytest.raises(ValueError, match=r"predict: .*scan16\.png is too large to read: 8x8 = 64 "
                                         r"pixels, over the limit of 63"):
        load_image(path, 1, None)
