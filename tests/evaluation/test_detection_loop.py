"""detect and evaluate_detector on a small detector, and the drawing of detections."""
import numpy as np
import pytest

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2.data.scenes import make_scenes
from tinymbv2.data import load_dataset
from tinymbv2.detection import default_boxes_for, postprocess_detections, ssd_loss
from tinymbv2.evaluation import detect, draw_detections, evaluate_detector
from tinymbv2.models import ssdlite_mobilenet_v2


@pytest.fixture(scope="module")
def setup():
    ds = load_dataset("mnist5k")
    pick = np.linspace(0, len(ds.train) - 1, 200).astype(int)
    scenes = make_scenes(ds.train.images[pick], ds.train.labels[pick], 6, size=64, scale=(14, 30), seed=0)
    model = ssdlite_mobilenet_v2(11, width_mult=0.35, size=64, in_channels=1, seed=0)
    images = (scenes.images - 0.1) / 0.3
    return model, images, scenes.targets(np.arange(6))


def test_evaluate_detector_matches_a_hand_run_and_keeps_modes(setup):
    model, images, targets = setup
    model.train()
    result = evaluate_detector(model, images, targets, batch_size=4)
    assert model.training and all(m.training for m in model.modules())   # modes restored
    model.eval()
    with tinymbv2.no_grad():
        cls, box = tinymbv2.fuse(model)(Tensor(images))
    anchors = default_boxes_for(model, (64, 64))
    parts = ssd_loss(cls, box, anchors, targets)
    whole = parts["bbox_regression"].item() + parts["classification"].item()
    assert result["loss"] == pytest.approx(whole, rel=1e-5)              # independent of the batches
    expected = postprocess_detections(cls.numpy(), box.numpy(), anchors, (64, 64))
    assert len(result["detections"]) == 6
    for mine, theirs in zip(result["detections"], expected):
        np.testing.assert_allclose(mine["scores"], theirs["scores"], rtol=1e-5)
    assert 0 <= result["map"] <= result["map_50"] <= 1
    again = evaluate_detector(model, images, targets, batch_size=6)
    assert again["loss"] == pytest.approx(result["loss"], rel=1e-5)
    assert again["map_50"] == pytest.approx(result["map_50"], abs=1e-6)


def test_detect_passes_postprocessing_options(setup):
    model, images, _ = setup
    few = detect(model, images[:2], detections_per_img=3)
    assert [len(d["scores"]) for d in few] == [3, 3]
    assert all((np.diff(d["scores"]) <= 0).all() for d in few)


def test_draw_detections_draws_what_scores_high_enough():
    image = np.zeros((1, 20, 30))
    detections = {"boxes": np.array([[2, 2, 12, 10.0], [15, 5, 25, 15]]), "scores": np.array([0.9, 0.3]),
                  "labels": np.array([1, 2])}
    picture = np.asarray(draw_detections(image, detections, ["bg", "one", "two"], min_score=0.5, scale=2))
    assert picture.shape == (40, 60, 3)
    assert tuple(picture[10, 4]) == (60, 180, 75)           # the left edge of box 1, class 1's colour
    assert tuple(picture[12, 14]) == (0, 0, 0)              # inside it: the image
    assert not picture[14:, 32:].any()                      # box 2 scored 0.3: not drawn (the tag of box 1 sits above row 14)
    with_truth = np.asarray(draw_detections(image, detections, ["bg", "one", "two"], min_score=0.95,
                                            targets={"boxes": np.array([[15, 5, 25, 15.0]])}, scale=2))
    assert tuple(with_truth[20, 30]) == (150, 150, 150)     # the true box, grey
    with pytest.raises(ValueError, match=r"expected an image .* got shape \(2, 3, 4, 5\)"):
        draw_detections(np.zeros((2, 3, 4, 5)), detections, ["bg", "one", "two"])
