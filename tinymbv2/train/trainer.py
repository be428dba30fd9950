"""The training loop, read top to bottom (nanoGPT style).

One step: forward the batch, compute the loss, ``zero_grad``, ``backward``,
``step`` the optimizer (and the scheduler, per batch or per epoch). After each
epoch: evaluate on the validation split, record the history, keep the best
weights, and write a checkpoint that resumes the run exactly.

``fit`` trains the model through :func:`tinymbv2.fusion.fuse` unless ``fuse=False``:
the fused view holds the very same Parameter and buffer objects, so the optimizer
(built from the plain model), the checkpoints and the best weights (both from the
plain model) see every update; ``fuse=False`` runs the plain layers, to step through them.
"""
from __future__ import annotations

import copy
import sys
import time

from .. import functional as F
from .. import fusion
from ..autograd import no_grad
from ..evaluation import evaluate, model_batch, model_dtype
from ..nn import BatchNorm2d
from .checkpoint import load_checkpoint, save_checkpoint


def _progress(total, desc, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr,
                dynamic_ncols=True)


def train_one_epoch(model, loader, optimizer, loss_fn=F.cross_entropy, scheduler=None,
                    scheduler_interval: str = "epoch", progress: bool = True,
                    desc: str = "train", train_mode=None) -> dict:
    """One pass over ``loader``; returns mean loss, accuracy and images/s.

    ``train_mode(model)`` replaces ``model.train()`` (fine-tuning keeps frozen
    BatchNorms in eval mode this way).
    """
    (train_mode or (lambda m: m.train()))(model)
    dtype = model_dtype(model)
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    bar = _progress(len(loader), desc, progress)
    for images, labels in loader:
        logits = model(model_batch(model, images, dtype))
        loss = loss_fn(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None and scheduler_interval == "batch":
            scheduler.step()

        n = len(labels)
        total_loss += float(loss.item()) * n
        correct += int((logits.numpy().argmax(axis=1) == labels).sum())
        seen += n
        rate = seen / (time.perf_counter() - start)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}",
                        lr=f"{optimizer.param_groups[0]['lr']:.3g}", img_s=f"{rate:.0f}")
        bar.update(1)
    bar.close()
    if scheduler is not None and scheduler_interval == "epoch":
        scheduler.step()
    seconds = time.perf_counter() - start
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1),
            "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds}


def new_history() -> dict:
    """An empty training history: per-epoch lists, and the best validation epoch."""
    return {"epoch": [], "train_loss": [], "train_acc": [], "val_loss": [], "val_acc": [],
            "lr": [], "seconds": [], "best_epoch": None, "best_val_acc": None}


def fit(model, optimizer, train_loader, val_split=None, epochs: int = 1, loss_fn=F.cross_entropy,
        scheduler=None, scheduler_interval: str = "epoch", checkpoint_path=None,
        resume_from=None, config: dict | None = None, progress: bool = True,
        log=print, stop_after: int | None = None, train_mode=None, fuse: bool = True) -> dict:
    """Train for ``epochs`` epochs; returns the history (and keeps the best weights).

    val_split: an object with ``.images`` and ``.labels`` (or None).
    checkpoint_path: written after every epoch (atomically); ``resume_from`` reads one
    and continues from the epoch after it, reproducing the uninterrupted run exactly
    (same weights, optimizer and scheduler state, data order and dropout draws).
    The best validation-accuracy weights are in ``history["best_state"]`` (a
    state_dict), not written to the JSON-able part. ``stop_after=k`` ends the run
    after epoch k (the schedule still spans ``epochs``): train in sessions, resume later.
    ``fuse=False``: train the plain model, layer by layer, instead of its fused view.
    """
    if scheduler_interval not in ("epoch", "batch"):
        raise ValueError(f"fit: expected scheduler_interval 'epoch' or 'batch', got {scheduler_interval!r}")
    history, start_epoch = new_history(), 0
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer, scheduler, restore_rng=True)
        start_epoch = state["epoch"]
        history.update(state["extra"].get("history", {}))
        best = state["extra"].get("best_state")
        history["best_state"] = best if best else None
    net = fusion.fuse(model) if fuse else model  # what runs; `model` is what is saved
    set_mode = train_mode or (lambda m: m.train())
    last = epochs if stop_after is None else min(epochs, stop_after)
    for epoch in range(start_epoch, last):
        train_loader.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        set_mode(model)  # the plain model's flags too (with fuse, `net` is another module)
        stats = train_one_epoch(net, train_loader, optimizer, loss_fn, scheduler,
                                scheduler_interval, progress, desc=f"epoch {epoch + 1}/{epochs}",
                                train_mode=train_mode)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(stats["loss"])
        history["train_acc"].append(stats["accuracy"])
        history["lr"].append(lr)
        history["seconds"].append(stats["seconds"])
        line = (f"epoch {epoch + 1:>3}/{epochs}  train loss {stats['loss']:.4f} "
                f"acc {stats['accuracy']:.4f}")
        if val_split is not None:
            ev = evaluate(net, val_split.images, val_split.labels, loss_fn=loss_fn, fuse=False)
            history["val_loss"].append(ev["loss"])
            history["val_acc"].append(ev["accuracy"])
            line += f"  val loss {ev['loss']:.4f} acc {ev['accuracy']:.4f}"
            if history["best_val_acc"] is None or ev["accuracy"] > history["best_val_acc"]:
                history["best_val_acc"], history["best_epoch"] = ev["accuracy"], epoch + 1
                history["best_state"] = copy.deepcopy(model.state_dict())
        line += f"  lr {lr:.3g}  {stats['images_per_s']:.0f} img/s  {stats['seconds']:.1f}s"
        if log:
            log(line)
        if checkpoint_path is not None:
            extra = {"history": {k: v for k, v in history.items() if k != "best_state"},
                     "best_state": history.get("best_state") or {}}
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, epoch=epoch + 1,
                            config=config, extra=extra)
    return history


def recalibrate_batchnorm(model, images, batch_size: int = 128):
    """Re-estimate every BatchNorm's running statistics for the current weights.

    After a short run the running averages lag the weights (they mix statistics
    of many earlier weight settings), so eval-mode accuracy can sit far below
    training accuracy. One pass over ``images`` in training mode with a
    cumulative average (momentum None) replaces them by the statistics of the
    final network. Returns the model in eval mode.

    It runs ``model`` as given: a fused view (``tinymbv2.fuse(model)``) works as well
    and faster, since its BatchNorms are the model's and read their momentum as the
    plain layers do.
    """
    bns = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.running_mean.data[...] = 0
        bn.running_var.data[...] = 1
        bn.num_batches_tracked.data[...] = 0
        bn.momentum = None  # cumulative average over the pass
    model.train()
    dtype = model_dtype(model)
    with no_grad():
        for start in range(0, len(images), batch_size):
            model(model_batch(model, images[start:start + batch_size], dtype))
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    return model.eval()
