"""The evaluation loop: a model in eval mode over a whole split, batch by batch, no gradients.

``evaluate`` runs the model through [fuse][tinymbv2.fusion.fuse] unless ``fuse=False``:
the fused view shares the model's Parameters and buffers and runs faster; ``fuse=False``
runs the plain model, layer by layer, to step through it.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .. import functional as F
from .. import fusion
from ..autograd import Tensor, no_grad
from .metrics import accuracy


def evaluate(model, images, labels, batch_size: int = 256, loss_fn=F.cross_entropy,
             fuse: bool = True) -> dict:
    """Eval-mode pass over a split: mean loss, accuracy, predictions (N,), scores (N, K).

    Every module comes back in the mode it was in (a frozen BatchNorm of a fine-tuned model
    stays in eval mode).

    Args:
        model: The network.
        images: ``(N, C, H, W)``, already normalised.
        labels: ``(N,)``.
        batch_size: The images per forward pass.
        loss_fn: ``loss_fn(logits, labels, reduction="sum")`` gives the summed loss.
        fuse: Run the fused view (False: the plain model, layer by layer).

    Returns:
        ``{"loss": mean loss, "accuracy": fraction, "predictions": (N,), "scores": (N, K)}``.
    """
    net = fusion.fuse(model) if fuse else model
    scores, losses = [], []
    dtype = model_dtype(model)
    with eval_mode(model, net), no_grad():
        for start in range(0, len(labels), batch_size):
            x = model_batch(model, images[start:start + batch_size], dtype)
            y = labels[start:start + batch_size]
            logits = net(x)
            losses.append(float(loss_fn(logits, y, reduction="sum").item()))
            scores.append(logits.numpy())
    scores = np.concatenate(scores) if scores else np.zeros((0, 0))
    predictions = scores.argmax(axis=1) if len(scores) else np.zeros(0, dtype=np.int64)
    return {
        "loss": sum(losses) / max(len(labels), 1),
        "accuracy": accuracy(predictions, labels),
        "predictions": predictions,
        "scores": scores,
    }


@contextlib.contextmanager
def eval_mode(*models):
    """Every module of ``models`` in eval mode inside the block, each back in its own mode after.

    Not all in one mode: some BatchNorms may have been frozen in eval mode. A fused view is
    passed with its model: it may keep flags of its own.

    Args:
        *models: The modules (a model and its fused view).
    """
    modes = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def model_dtype(model):
    """The dtype of ``model``'s parameters (float32 for a model without any)."""
    for p in model.parameters():
        return p.dtype
    return np.float32


def model_batch(model, images, dtype=None) -> Tensor:
    """A batch of images as a Tensor of the model's dtype, on the model's device.

    A model moved with ``model.to("cuda")`` gets its batches on the GPU, one copy per batch.

    Args:
        model: The network.
        images: An array of images.
        dtype: The dtype; None: the model's.

    Returns:
        The Tensor.
    """
    x = Tensor(np.asarray(images, dtype=dtype if dtype is not None else model_dtype(model)))
    for p in model.parameters():
        return x.to(p.device) if p.device != "cpu" else x
    return x
