"""Prediction on image files: the top-k classes of a trained model (``tinymbv2 predict``).

The model and its saved configuration come from a checkpoint
(``model, config = tinymbv2.train.load_trained("runs/mnist/model.npz")``); the
configuration says how the training images were prepared (channels, size,
normalisation) and names the classes, so a new image is prepared the same way:

>>> predict(model, config, ["digit.png"], top_k=3)
[{'path': 'digit.png', 'top': [('7', 0.98...), ('1', 0.01...), ('9', 0.00...)]}]

A detector's checkpoint goes to ``predict_boxes`` instead: the boxes found in each image; a
segmenter's to ``predict_masks``: each pixel's class.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import fusion
from ..autograd import no_grad
from ..data.readers import read_image
from ..data.transforms import Normalize, Resize
from .loop import eval_mode, model_batch


def load_image(path, in_channels: int, size, invert: bool = False) -> np.ndarray:
    """One image file as a float32 (C, H, W) array in [0, 1], resized to ``size``.

    Read by [read_image][tinymbv2.data.readers.read_image]: 8-bit pixels divided by 255,
    16-bit ones by 65535; a file of more pixels than
    ``tinymbv2.data.readers.MAX_IMAGE_PIXELS`` is refused before it is decoded.

    Args:
        path: The image file.
        in_channels: 1 reads it grey, else RGB.
        size: (h, w); None keeps the file's size.
        invert: ``1 - x``: MNIST-style models expect a light digit on a dark background,
            and this turns a dark-on-light scan into that.

    Returns:
        The image (C, H, W).
    """
    array = read_image(path, "L" if in_channels == 1 else "RGB", who="predict")
    if invert:
        array = 1.0 - array
    if size is not None:
        array = Resize(tuple(size))(array[None])[0]
    return array


def predict(model, config: dict, paths, top_k: int = 3, invert: bool = False,
            fuse: bool = True) -> list[dict]:
    """Top-k classes with softmax probabilities for each image file.

    Every module comes back in the mode it was in.

    Args:
        model: The trained network.
        config: The saved configuration of the run (``in_channels``, ``input_size``,
            ``norm_mean``, ``norm_std``, ``class_names``), as ``load_trained`` returns it.
        paths: The image files.
        top_k: How many classes per file.
        invert: Invert the images first (see
            [load_image][tinymbv2.evaluation.prediction.load_image]).
        fuse: Run the fused view (False: the plain model, layer by layer).

    Returns:
        One ``{"path": str, "top": [(class name, probability), ...]}`` per file, most
        probable first.
    """
    normalize = Normalize(config["norm_mean"], config["norm_std"])  # the training data's
    batch = np.stack([load_image(p, config["in_channels"], config.get("input_size"), invert)
                      for p in paths])
    net = fusion.fuse(model) if fuse else model
    with eval_mode(model, net), no_grad():
        probs = F.softmax(net(model_batch(model, normalize(batch))), axis=-1).numpy()
    names = config.get("class_names") or [str(i) for i in range(probs.shape[1])]
    results = []
    for path, p in zip(paths, probs):
        order = np.argsort(-p)[:top_k]
        results.append({"path": str(path),
                        "top": [(names[i], float(p[i])) for i in order]})
    return results


def predict_boxes(model, config: dict, paths, min_score: float = 0.5, invert: bool = False,
                  fuse: bool = True) -> list[dict]:
    """A detector's boxes in each image file, scored ``min_score`` or more, best first.

    Each image is read in the model's channels and resized to the scenes' size it was
    trained on; the boxes are in those pixels.

    Args:
        model: The trained detector.
        config: Its saved configuration (as for [predict][tinymbv2.evaluation.prediction.predict]).
        paths: The image files.
        min_score: The least class probability of a box returned.
        invert: Invert the images first.
        fuse: Run the fused view.

    Returns:
        One ``{"path", "image" (C, H, W) in [0, 1], "boxes" (D, 4), "scores" (D,),
        "labels" (D,), "names" [D class names]}`` per file.
    """
    from .detection_loop import detect

    images, normalized, names = _scene_images(config, paths, invert)
    results = []
    for path, image, found in zip(paths, images, detect(model, normalized, fuse=fuse)):
        keep = found["scores"] >= min_score
        results.append({"path": str(path), "image": image, "boxes": found["boxes"][keep],
                        "scores": found["scores"][keep], "labels": found["labels"][keep],
                        "names": [names[int(c)] for c in found["labels"][keep]]})
    return results


def predict_masks(model, config: dict, paths, invert: bool = False, fuse: bool = True) -> list[dict]:
    """A segmenter's mask of each image file, and the share of the pixels each class takes.

    Each image is read in the model's channels and resized to the scenes' size it was
    trained on; the mask is in those pixels.

    Args:
        model: The trained segmenter.
        config: Its saved configuration (as for [predict][tinymbv2.evaluation.prediction.predict]).
        paths: The image files.
        invert: Invert the images first.
        fuse: Run the fused view.

    Returns:
        One ``{"path", "image" (C, H, W) in [0, 1], "mask" (H, W) uint8, "shares": [(class
        name, fraction of the pixels), ...] for the classes found, most pixels first}`` per file.
    """
    from .segmentation_loop import segment

    images, normalized, names = _scene_images(config, paths, invert)
    results = []
    for path, image, mask in zip(paths, images, segment(model, normalized, fuse=fuse)):
        counts = np.bincount(mask.ravel(), minlength=len(names))
        order = [c for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
        results.append({"path": str(path), "image": image, "mask": mask,
                        "shares": [(names[c], float(counts[c] / mask.size)) for c in order]})
    return results


def _scene_images(config: dict, paths, invert: bool):
    """The files read as a detector or segmenter was trained (its channels, its scenes' size):
    ``(images (N, C, H, W) in [0, 1], the same normalised, the class names)``."""
    normalize = Normalize(config["norm_mean"], config["norm_std"])
    images = np.stack([load_image(p, config["in_channels"], config.get("input_size"), invert)
                       for p in paths])
    names = config.get("class_names") or [str(i) for i in range(config["num_classes"])]
    return images, normalize(images), names
