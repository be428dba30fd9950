r"""MNIST scenes: a detection and segmentation dataset made offline from the bundled digits.

Each scene is a grey ``size x size`` canvas holding 1 to ``max_digits`` MNIST digits, each
resized (bilinear) to a random side in ``scale`` pixels and placed at a random position,
drawn over the canvas by taking the brighter pixel. A digit is placed only where it overlaps
every digit already there by at most ``max_overlap`` of the smaller one's box, so no digit
is hidden; a scene keeps the digits that found such a place within a few tries. Targets:

* ``boxes[i]``: (M, 4) float32 ``(x1, y1, x2, y2)`` in pixels, tight around each digit's ink
  (the pixels of the resized digit brighter than ``INK``), edges on pixel borders;
* ``labels[i]``: (M,) int64 in 1..10 (digit ``d`` is class ``d + 1``; 0 is the background);
* ``masks[i]``: (size, size) uint8, each pixel's class: the digit whose ink is brightest
  there, or 0.

Train scenes use only digits of mnist5k's training split, validation and test scenes only
those of its validation and test splits, so no test digit was ever seen in training. The
scenes are a pure function of their arguments and ``seed`` (``SCENES_SEED = 62``, after the
paper's section 6.2): every machine makes the same ones.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .datasets import load_dataset
from .transforms import Resize

SCENES_SEED = 62
INK = 0.5              # a resized digit's pixel brighter than this is ink (boxes and masks)
PLACEMENT_TRIES = 20   # positions tried per digit before it is left out of the scene
CLASS_NAMES = ("background",) + tuple(str(d) for d in range(10))
DIGIT_SIDES = (14, 64)  # the digits' smallest and largest side on a 128 px canvas (the default)


def scaled_digit_sides(size: int) -> tuple[int, int]:
    """The default scenes' digit sides for a canvas of side ``size``: ``DIGIT_SIDES`` times
    ``size / 128`` (at least 8 px, at most the canvas).

    So scenes of side 256 drawn with these sides are drawn as the 128 px scenes with every
    length doubled (the same distribution, not the same scenes: the random draws differ):
    digits of 28 to 128 px, strokes twice as wide in pixels. A segmenter needs
    that: its output stride must be a few times finer than a stroke (``docs/benchmarks.md``,
    segmentation), while detection's boxes do not care how thin the ink is.

    Args:
        size: The canvas side in pixels.

    Returns:
        ``(smallest, largest)``, to pass as ``scale`` to
        [load_mnist_scenes][tinymbv2.data.scenes.load_mnist_scenes].
    """
    lo, hi = (round(side * size / 128) for side in DIGIT_SIDES)
    return min(max(8, lo), size), min(max(8, hi), size)


@dataclass(frozen=True)
class SceneSplit:
    """Scenes and their targets: ``images`` float32 (N, 1, S, S), ``boxes`` and ``labels``
    lists of N arrays ((M_i, 4) and (M_i,)), ``masks`` uint8 (N, S, S)."""

    images: np.ndarray
    boxes: list
    labels: list
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def targets(self, index) -> list[dict]:
        """The detection targets of the scenes at ``index`` (e.g. a batch's indices).

        Args:
            index: An array of scene indices.

        Returns:
            One ``{"boxes": (M, 4), "labels": (M,)}`` dict per scene.
        """
        return [{"boxes": self.boxes[i], "labels": self.labels[i]} for i in np.asarray(index)]


@dataclass(frozen=True)
class SceneDataset:
    """MNIST scenes cut into ``train``, ``val`` and ``test`` [SceneSplit][tinymbv2.data.scenes.SceneSplit]s."""

    name: str
    train: SceneSplit
    val: SceneSplit
    test: SceneSplit
    num_classes: int
    class_names: tuple

    @property
    def image_shape(self) -> tuple:
        """``(C, H, W)`` of one scene."""
        return tuple(self.train.images.shape[1:])

    def __repr__(self) -> str:
        size = self.train.images.shape[-1]
        return (f"SceneDataset({self.name!r}, {size}x{size} grey, {self.num_classes} classes "
                f"with background, train={len(self.train)}, val={len(self.val)}, test={len(self.test)})")


def ink_box(patch: np.ndarray) -> tuple[int, int, int, int] | None:
    """The tightest ``(x1, y1, x2, y2)`` around the ink of one resized digit, in its pixels.

    Args:
        patch: (s, s) grey levels in [0, 1].

    Returns:
        Pixel-border coordinates (``x2`` one past the last ink column), or None without ink.
    """
    rows, cols = np.flatnonzero((patch > INK).any(axis=1)), np.flatnonzero((patch > INK).any(axis=0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def overlap_of_smaller(box, others: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, of ``box`` with each of ``others``.

    Args:
        box: One ``(x1, y1, x2, y2)``.
        others: (K, 4) boxes.

    Returns:
        (K,) fractions in [0, 1].
    """
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return w * h / np.minimum(area, areas)


def make_scenes(digits: np.ndarray, digit_labels: np.ndarray, n_scenes: int, size: int = 128,
                max_digits: int = 6, scale=(14, 64), max_overlap: float = 0.2,
                seed: int = SCENES_SEED) -> SceneSplit:
    """``n_scenes`` scenes drawn from ``digits``.

    Args:
        digits: (D, 1, 28, 28) float32 digits in [0, 1].
        digit_labels: (D,) their digits 0..9.
        n_scenes: How many scenes.
        size: The canvas side in pixels.
        max_digits: The most digits in a scene (each scene draws 1..max_digits).
        scale: (smallest, largest) side a digit is resized to, in pixels.
        max_overlap: The most a digit's box may overlap another's, as a fraction of the
            smaller box.
        seed: The generator's seed: an int, or a sequence of ints (numpy's SeedSequence entropy).

    Returns:
        The [SceneSplit][tinymbv2.data.scenes.SceneSplit].

    Raises:
        ValueError: A scale range that does not fit the canvas, or no digits.
    """
    lo, hi = scale
    if not (8 <= lo <= hi <= size):
        raise ValueError(f"make_scenes: expected 8 <= scale[0] <= scale[1] <= size ({size}), got {scale}")
    if len(digits) == 0 or max_digits < 1:
        raise ValueError(f"make_scenes: expected digits and max_digits >= 1, got {len(digits)} "
                         f"digits and max_digits={max_digits}")
    rng = np.random.default_rng(seed)
    images = np.zeros((n_scenes, 1, size, size), dtype=np.float32)
    masks = np.zeros((n_scenes, size, size), dtype=np.uint8)
    boxes, labels = [], []
    for n in range(n_scenes):
        canvas, mask = images[n, 0], masks[n]
        brightest = np.zeros((size, size), dtype=np.float32)   # the ink level owning each pixel
        placed, classes = [], []
        for _ in range(int(rng.integers(1, max_digits + 1))):
            k = int(rng.integers(len(digits)))
            side = int(rng.integers(lo, hi + 1))
            patch = Resize(side)(digits[k:k + 1])[0, 0]
            ink = ink_box(patch)
            if ink is None:
                continue
            for _ in range(PLACEMENT_TRIES):
                top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                box = np.array([left + ink[0], top + ink[1], left + ink[2], top + ink[3]], dtype=np.float32)
                if not placed or overlap_of_smaller(box, np.array(placed)).max() <= max_overlap:
                    break
            else:
                continue                                          # no room: leave it out
            window = (slice(top, top + side), slice(left, left + side))
            canvas[window] = np.maximum(canvas[window], patch)
            owns = (patch > INK) & (patch > brightest[window])
            mask[window][owns] = int(digit_labels[k]) + 1
            brightest[window] = np.maximum(brightest[window], np.where(patch > INK, patch, 0))
            placed.append(box)
            classes.append(int(digit_labels[k]) + 1)
        boxes.append(np.array(placed, dtype=np.float32).reshape(-1, 4))
        labels.append(np.array(classes, dtype=np.int64))
    return SceneSplit(images, boxes, labels, masks)


@functools.lru_cache(maxsize=4)
def load_mnist_scenes(size: int = 128, n_train: int = 2000, n_val: int = 250, n_test: int = 500,
                      max_digits: int = 6, scale=None, seed: int = SCENES_SEED) -> SceneDataset:
    """MNIST scenes from mnist5k's three splits (each split's scenes from its own digits).

    Cached: the same arguments give the same (read-only) arrays.

    Args:
        size: The canvas side in pixels.
        n_train: Training scenes, from the 3,500 training digits.
        n_val: Validation scenes, from the 500 validation digits.
        n_test: Test scenes, from the 1,000 test digits.
        max_digits: The most digits in a scene.
        scale: (smallest, largest) digit side in pixels; None: 14 to 64, or to the canvas
            side if that is smaller.
        seed: The scenes' seed (each split draws from its own stream of it).

    Returns:
        The [SceneDataset][tinymbv2.data.scenes.SceneDataset]: 11 classes, 0 the background.
    """
    scale = (DIGIT_SIDES[0], min(DIGIT_SIDES[1], size)) if scale is None else tuple(scale)
    digits = load_dataset("mnist5k")
    parts = []
    for k, (split, n) in enumerate(((digits.train, n_train), (digits.val, n_val), (digits.test, n_test))):
        scenes = make_scenes(split.images, split.labels, n, size, max_digits, scale,
                             seed=(seed, k))
        for array in (scenes.images, scenes.masks, *scenes.boxes, *scenes.labels):
            array.flags.writeable = False          # shared by the cache: nobody changes them
        parts.append(scenes)
    return SceneDataset("mnist-scenes", *parts, num_classes=11, class_names=CLASS_NAMES)
