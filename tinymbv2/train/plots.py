"""Learning curves, confusion matrices, detections and masks as PNG files (matplotlib, no display)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(**kwargs):
    """A matplotlib Figure drawn straight to a file.

    Not through pyplot: pyplot would need a backend, and choosing one (``matplotlib.use``)
    changes it for the whole process, which would stop a notebook that trained a run from
    showing its own plots.
    """
    from matplotlib.figure import Figure

    return Figure(**kwargs)


SCORES = {"acc": "accuracy", "map50": "mAP@0.5", "miou": "mIoU"}  # a history's score key, and its title


def plot_learning_curves(history: dict, path) -> Path:
    """Loss and score per epoch, train vs validation, side by side.

    The score is the accuracy (``train_acc``, ``val_acc``), or a detector's validation
    mAP@0.5 (``val_map50``; a detector's training batches have no score), or a segmenter's
    validation mean IoU (``val_miou``).

    Args:
        history: The training history (``train_loss``, ``val_loss`` and the score's lists).
        path: The PNG file to write.

    Returns:
        ``path``.
    """
    score = next((k for k in SCORES if f"val_{k}" in history or f"train_{k}" in history), "acc")
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig = _figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, score, SCORES[score])):
        if history.get(f"train_{key}"):
            ax.plot(epochs, history[f"train_{key}"], "o-", label="train")
        if history.get(f"val_{key}"):
            ax.plot(epochs, history[f"val_{key}"], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_yscale("log")  # early losses can be 100x the final ones
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def count_label(count) -> str:
    """A count short enough for a confusion matrix's cell: ``"9999"``, ``"12k"``, ``"7.5M"``.

    A segmenter's matrix counts pixels (millions for the background of a test split), which
    written out in full would run over their neighbours.

    Args:
        count: A count >= 0.

    Returns:
        The count in full below 10,000, in thousands below a million, else in millions.
    """
    count = int(count)
    if count < 10_000:
        return str(count)
    if count < 999_500:
        return f"{count / 1e3:.0f}k"
    return f"{count / 1e6:.1f}M"


def plot_confusion_matrix(cm: np.ndarray, path, class_names=None) -> Path:
    """Counts, true class on rows, predicted class on columns.

    Args:
        cm: The confusion matrix (K, K).
        path: The PNG file to write.
        class_names: The K class names; None: the indices.

    Returns:
        ``path``.
    """
    k = cm.shape[0]
    names = class_names or [str(i) for i in range(k)]
    fig = _figure(figsize=(0.5 * k + 3, 0.5 * k + 2.5))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=45 if k > 10 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, count_label(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > threshold else "black")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def plot_detections(images, detections, targets, class_names, path, n: int = 8,
                    min_score: float = 0.5) -> Path:
    """The first ``n`` scenes with their detections (coloured) and true boxes (grey).

    Args:
        images: (N, C, H, W) scenes in [0, 1] (not normalised).
        detections: One ``{"boxes", "scores", "labels"}`` dict per scene.
        targets: One ``{"boxes", "labels"}`` dict per scene.
        class_names: The name of each class index.
        path: The PNG file to write.
        n: How many scenes.
        min_score: The least score drawn.

    Returns:
        ``path``.
    """
    from ..evaluation import draw_detections

    n = min(n, len(images))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = _figure(figsize=(3.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        picture = draw_detections(images[i], detections[i], class_names, min_score, targets[i], scale=3)
        axes.ravel()[i].imshow(np.asarray(picture))
    fig.suptitle(f"test scenes: detections scoring {min_score} or more (grey: the true boxes)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def plot_masks(images, truth, predicted, class_names, path, n: int = 4) -> Path:
    """The first ``n`` scenes, one row each: image | true mask | predicted mask.

    The masks in [colour_mask][tinymbv2.evaluation.segmentation_drawing.colour_mask]'s palette
    (background black), with a legend of the classes.

    Args:
        images: (N, C, H, W) scenes in [0, 1] (not normalised).
        truth: The true masks (N, H, W).
        predicted: The predicted masks (N, H, W).
        class_names: The name of each class index (index 0 the background).
        path: The PNG file to write.
        n: How many scenes.

    Returns:
        ``path``.
    """
    from matplotlib.patches import Patch

    from ..evaluation import colour_mask

    n = min(n, len(images))
    fig = _figure(figsize=(7.5, 2.5 * n + 0.8))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        image = np.clip(np.asarray(images[i], dtype=np.float64), 0, 1).transpose(1, 2, 0)
        axes[i, 0].imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axes[i, 1].imshow(colour_mask(truth[i]))
        axes[i, 2].imshow(colour_mask(predicted[i]))
        for ax, title in zip(axes[i], ("scene", "true mask", "predicted")):
            ax.axis("off")
            if i == 0:
                ax.set_title(title)
    colours = colour_mask(np.arange(len(class_names))[None])[0] / 255.0
    fig.legend([Patch(color=c) for c in colours], list(class_names), loc="lower center",
               ncol=min(len(class_names), 11), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
