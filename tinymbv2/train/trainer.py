"""The training loop, read top to bottom (nanoGPT style).

One step: forward the batch, compute the loss, ``zero_grad``, ``backward``,
``step`` the optimizer (and the scheduler, per batch or per epoch). After each
epoch: evaluate on the validation split, record the history, keep the best
weights, and write a checkpoint that resumes the run exactly.

A run whose numbers stop being numbers (a learning rate too high: the loss or the
weights become inf or NaN) stops with
[TrainingDiverged][tinymbv2.train.trainer.TrainingDiverged], naming the
epoch and the step, and never writes those weights into a checkpoint. What is checked,
and when:

* the loss, every step, before ``backward`` and the optimizer's step: a scalar already
  read back for the running mean, so the check costs nothing (no extra pass over the
  weights, no extra device sync). A non-finite loss never reaches the parameters; the
  forward pass that computed it has, though, already folded its batch's statistics into
  the BatchNorm running mean and variance (training mode), which may now hold NaN.
* the gradients are not scanned each step (a pass over every parameter, millions of
  values): a non-finite gradient writes inf or NaN into the weights it updates, and NaN
  spreads through every layer, so the *next* step's loss is non-finite and stops the run.
* the weights and buffers, then the optimizer's state arrays (momentum buffers, Adam's
  ``exp_avg`` and ``exp_avg_sq``, RMSprop's ``square_avg``, ...), once per epoch, before
  the checkpoint. This catches a non-finite gradient at an epoch's last step, which the
  loss cannot, and an optimizer state gone inf under finite weights: Adam's
  ``exp_avg_sq`` overflowing to inf makes its parameter's step ``exp_avg / inf = 0``, so
  that parameter silently stops learning, and the inf would be saved in the checkpoint.

``fit`` trains the model through [fuse][tinymbv2.fusion.fuse] unless ``fuse=False``:
the fused view holds the very same Parameter and buffer objects, so the optimizer
(built from the plain model), the checkpoints and the best weights (both from the
plain model) see every update; ``fuse=False`` runs the plain layers, to step through them.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path

from .. import functional as F
from .. import fusion
from ..autograd import no_grad
from ..backend import get_array_module
from ..evaluation import model_batch, model_dtype
from ..nn import BatchNorm2d
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .config import check_resume
from .tasks import Classification


class TrainingDiverged(ValueError):
    """Training stopped because the loss, a weight or the optimizer's state became inf or NaN.

    [fit][tinymbv2.train.trainer.fit] adds ``history`` (the epochs finished before) and
    ``kept`` (where the last good weights are).
    [record][tinymbv2.train.trainer.TrainingDiverged.record] is what ``metrics.json`` keeps.
    A ``ValueError``, so the command line prints it as one line and exits with code 2.

    Args:
        what: What became non-finite:

            * ``"loss"``: the loss of step ``step`` of epoch ``epoch``. The parameters are
              those that step's forward pass used (no backward, no optimizer step
              followed), but that forward pass ran in training mode and has already written
              its batch statistics, NaN or inf among them, into the BatchNorm running mean
              and variance: the model in memory is not the last good one, the checkpoint is;
            * ``"weights"``: found after the epoch's last step, ``name`` is the first
              parameter or buffer holding an inf or NaN
              ([first_non_finite][tinymbv2.train.trainer.first_non_finite]);
            * ``"optimizer"``: found after the epoch's last step, ``name`` is the first state
              array of the optimizer holding one, as ``"exp_avg_sq of features.0.0.weight"``
              ([first_non_finite_state][tinymbv2.train.trainer.first_non_finite_state]).
        epoch: The epoch, from 1.
        step: The step within the epoch, from 1.
        steps: The steps per epoch.
        lr: The learning rate of the step (after an epoch: the one the next step would take).
        value: The loss (for ``"loss"``).
        name: The parameter, buffer or state array (for ``"weights"`` and ``"optimizer"``).
    """

    def __init__(self, what: str, epoch: int, step: int, steps: int, lr: float,
                 value: float | None = None, name: str | None = None):
        super().__init__(what, epoch, step, steps, lr, value, name)  # so that it pickles
        self.what, self.epoch, self.step, self.steps, self.lr = what, epoch, step, steps, lr
        self.value, self.name = value, name
        self.history: dict | None = None
        self.kept: str | None = None

    def record(self) -> dict:
        """``{"epoch", "step", "steps", "what", "lr", "loss" | "parameter" | "state"}``,
        JSON-safe."""
        out = {"epoch": self.epoch, "step": self.step, "steps": self.steps, "what": self.what,
               "lr": self.lr}
        if self.what == "loss":
            out["loss"] = str(self.value)  # "nan" or "inf": JSON has no such numbers
        elif self.what == "optimizer":
            out["state"] = self.name
        else:
            out["parameter"] = self.name
        return out

    def __str__(self) -> str:
        if self.what == "loss":
            found = (f"the loss is {self.value} at epoch {self.epoch}, step {self.step} of "
                     f"{self.steps}")
        else:
            owner = "the optimizer's " if self.what == "optimizer" else ""
            found = (f"{owner}{self.name} holds inf or NaN after epoch {self.epoch} (step "
                     f"{self.step} of {self.steps})")
        return (f"training diverged: {found} (lr {self.lr:.3g}); try a lower learning rate"
                + (f"; {self.kept}" if self.kept else ""))


def first_non_finite(model) -> str | None:
    """The name of the first parameter, then buffer, of ``model`` that holds an inf or a NaN.

    One pass over the values where they live (NumPy or CuPy arrays, no copy; one host
    sync per array): cheap once per epoch, not something to do every step.

    Args:
        model: The model.

    Returns:
        The dotted name, or None when every value is finite.
    """
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if not _finite(tensor.data):
            return name
    return None


def first_non_finite_state(optimizer, model) -> str | None:
    """The first state array of ``optimizer`` that holds an inf or a NaN, named by its parameter.

    The optimizer keeps its state per parameter (``optimizer.state[id(param)]``: momentum
    buffers, Adam's moments, ...); numbers that are not arrays (a step count) are not
    scanned. Once per epoch, like [first_non_finite][tinymbv2.train.trainer.first_non_finite].

    Args:
        optimizer: The optimizer.
        model: The model its parameters belong to, for their names.

    Returns:
        ``"exp_avg_sq of features.0.0.weight"`` say, or None when every one is finite.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    for key, state in optimizer.state.items():
        for part, value in state.items():
            if hasattr(value, "dtype") and not _finite(value):
                return f"{part} of {names.get(key, 'a parameter not in the model')}"
    return None


def _finite(array) -> bool:
    """Whether every value of a NumPy or CuPy array is finite (integers always are)."""
    return array.dtype.kind != "f" or bool(get_array_module(array).isfinite(array).all())


def _progress(total, desc, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr,
                dynamic_ncols=True)


def train_one_epoch(model, loader, optimizer, loss_fn=F.cross_entropy, scheduler=None,
                    scheduler_interval: str = "epoch", progress: bool = True,
                    desc: str = "train", train_mode=None, epoch: int = 1, task=None) -> dict:
    """One pass over ``loader``; returns mean loss, accuracy and images/s.

    A non-finite loss raises
    [TrainingDiverged][tinymbv2.train.trainer.TrainingDiverged] naming
    ``epoch`` and the step, before ``backward`` and the optimizer's step, so the parameters
    stay those its forward pass used; the BatchNorm running statistics that forward pass
    updated may hold NaN.

    Args:
        model: The model (or its fused view).
        loader: The [DataLoader][tinymbv2.data.loader.DataLoader] of the training split.
        optimizer: The optimizer.
        loss_fn: ``loss_fn(logits, labels)``, the mean loss of a batch (when ``task`` is None).
        scheduler: A schedule to step; None: none.
        scheduler_interval: ``"batch"``: step the scheduler after every batch (``"epoch"``:
            the caller steps it).
        progress: Show a progress bar.
        desc: The progress bar's label.
        train_mode: ``train_mode(model)`` replaces ``model.train()`` (fine-tuning keeps
            frozen BatchNorms in eval mode this way).
        epoch: The epoch's number, for the messages.
        task: What the batches are and how they are scored
            ([tinymbv2.train.tasks][]); None: classification with ``loss_fn``.

    Returns:
        ``{"loss": ..., "accuracy": ... (None for a task that scores no training batch),
        "images_per_s": ..., "seconds": ...}``.

    Raises:
        TrainingDiverged: A non-finite loss.
    """
    task = task or Classification(loss_fn)
    (train_mode or (lambda m: m.train()))(model)
    dtype = model_dtype(model)
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    bar = _progress(len(loader), desc, progress)
    for step, (images, labels) in enumerate(loader, 1):
        outputs = model(model_batch(model, images, dtype))
        loss = task.loss(outputs, labels)
        value = float(loss.item())  # the step's one read-back to the host (the mean needs it)
        if not math.isfinite(value):  # before backward and step: the weights stay as they are
            bar.close()
            raise TrainingDiverged("loss", epoch, step, len(loader),
                                   optimizer.param_groups[0]["lr"], value=value)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None and scheduler_interval == "batch":
            scheduler.step()

        n = len(labels)
        total_loss += value * n
        if task.scores_training_batches:
            correct += task.correct(outputs, labels)
        seen += n
        rate = seen / (time.perf_counter() - start)
        shown = {"acc": f"{correct / seen:.3f}"} if task.scores_training_batches else {}
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", **shown,
                        lr=f"{optimizer.param_groups[0]['lr']:.3g}", img_s=f"{rate:.0f}")
        bar.update(1)
    bar.close()
    if scheduler is not None and scheduler_interval == "epoch":
        scheduler.step()
    seconds = time.perf_counter() - start
    accuracy = correct / max(seen, 1) if task.scores_training_batches else None
    return {"loss": total_loss / max(seen, 1), "accuracy": accuracy,
            "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds}


def new_history(task=None) -> dict:
    """An empty training history: per-epoch lists, and the best validation epoch.

    Args:
        task: The task ([tinymbv2.train.tasks][]); None: classification. Its ``score``
            names the score's keys (``val_acc``, ``best_val_acc``; ``val_map50``, ...);
            ``train_<score>`` is kept only for a task that scores its training batches.

    Returns:
        The history dict.
    """
    task = task or Classification()
    score = task.score
    history = {"epoch": [], "train_loss": []}
    if task.scores_training_batches:
        history[f"train_{score}"] = []
    history.update({"val_loss": [], f"val_{score}": [], "lr": [], "seconds": [], "best_epoch": None,
                    f"best_val_{score}": None})
    return history


def fit(model, optimizer, train_loader, val_split=None, epochs: int = 1, loss_fn=F.cross_entropy,
        scheduler=None, scheduler_interval: str = "epoch", checkpoint_path=None,
        resume_from=None, config: dict | None = None, progress: bool = True,
        log=print, stop_after: int | None = None, train_mode=None, fuse: bool = True,
        task=None, data_parallel=None) -> dict:
    """Train for ``epochs`` epochs; returns the history (and keeps the best weights).

    The weights of the best validation score (accuracy; mAP@0.5 for detection) are in
    ``history["best_state"]`` (a state_dict), not written to the JSON-able part.

    Resuming: the checkpoint is read once and checked before anything is loaded. With
    ``config`` given, the checkpoint's saved configuration must agree with it except for
    the fields that may change ([check_resume][tinymbv2.train.config.check_resume]); and it
    may not have trained more epochs than ``epochs``. Either is a one-line ``ValueError``,
    with the model, optimizer and scheduler untouched.

    Resuming with more (or fewer) epochs than the checkpoint's run planned: a schedule
    with an end (one-cycle, cosine: ``scheduler.planned_steps()``) is **stretched** to
    the length ``scheduler`` was built for here, from the step already taken
    (``scheduler.replan``): the lr jumps to the longer curve's value at that step and
    follows it to the new end. (Holding the old schedule's last lr instead would train
    the extra epochs at a one-cycle's final lr, max_lr / 250000: barely at all.) A
    schedule without an end (exponential decay) simply goes on.

    Args:
        model: The plain model (its fused view is made here unless ``fuse=False``).
        optimizer: The optimizer, built on the model's parameters.
        train_loader: The [DataLoader][tinymbv2.data.loader.DataLoader] of the training split.
        val_split: An object with ``.images`` and ``.labels`` (or None).
        epochs: The epochs the run is planned for.
        loss_fn: ``loss_fn(logits, labels, reduction=...)`` (when ``task`` is None).
        scheduler: The learning-rate schedule, or None.
        scheduler_interval: ``"batch"`` or ``"epoch"``: when the scheduler steps.
        checkpoint_path: Written after every epoch (atomically); None: none.
        resume_from: A checkpoint to continue from, at the epoch after it, reproducing the
            uninterrupted run exactly (same weights, optimizer and scheduler state, data
            order and dropout draws).
        config: The run's saved configuration, compared with the checkpoint's on resume.
        progress: Show progress bars.
        log: Where the per-epoch lines go.
        stop_after: End the run after this epoch (the schedule still spans ``epochs``):
            train in sessions, resume later.
        train_mode: ``train_mode(model)`` replaces ``model.train()``.
        fuse: Train the fused view (False: the plain model, layer by layer).
        task: What the batches are, their loss and the validation score
            ([tinymbv2.train.tasks][]); None: classification with ``loss_fn``.
        data_parallel: A [DataParallel][tinymbv2.distributed.training.DataParallel] (one
            rank of ``mpirun``): the steps run through DistributedDataParallel, and the
            epoch's training loss and accuracy are averaged over the ranks. The caller gives
            this rank's loader slice, and ``log``, ``progress`` and ``checkpoint_path`` to
            rank 0 alone. None: one process.

    Returns:
        The history ([new_history][tinymbv2.train.trainer.new_history]): per-epoch lists,
        the best epoch, ``"best_state"``.

    Raises:
        TrainingDiverged: A non-finite loss, or non-finite weights or optimizer state after
            an epoch (see the module for what is checked when), with ``history`` (the
            finished epochs) and ``kept`` (where the last good weights are:
            [where_kept][tinymbv2.train.trainer.where_kept]); weights or state that are not
            finite are never written to ``checkpoint_path``.
        ValueError: The checkpoint cannot be resumed into this run.
    """
    if scheduler_interval not in ("epoch", "batch"):
        raise ValueError(f"fit: expected scheduler_interval 'epoch' or 'batch', got {scheduler_interval!r}")
    task = task or Classification(loss_fn)
    score = task.score
    history, start_epoch, saved_epoch = new_history(task), 0, None
    if resume_from is not None:
        state = read_checkpoint(resume_from, restore_rng=True)  # read once, loads nothing yet
        if config is not None:
            check_resume(resume_from, state.get("config"), config)
        if state["epoch"] > epochs:
            raise ValueError(f"resume: {resume_from} has trained {state['epoch']} epochs "
                             f"already, more than this run's epochs {epochs}")
        planned = scheduler.planned_steps() if scheduler is not None else None
        load_checkpoint(resume_from, model, optimizer, scheduler, restore_rng=True, state=state)
        start_epoch = state["epoch"]
        if planned is not None and scheduler.planned_steps() != planned:
            scheduler.replan(planned)  # the run was extended (or shortened): stretch it
        history.update(state["extra"].get("history", {}))
        best = state["extra"].get("best_state")
        history["best_state"] = best if best else None
        same_file = (checkpoint_path is not None
                     and Path(resume_from).resolve() == Path(checkpoint_path).resolve())
        saved_epoch = start_epoch if same_file else None
    net = fusion.fuse(model) if fuse else model  # what runs; `model` is what is saved
    # the training steps; validation runs `net` itself (no gradients to average)
    runner = net if data_parallel is None else data_parallel.wrap(net)
    set_mode = train_mode or (lambda m: m.train())
    last = epochs if stop_after is None else min(epochs, stop_after)
    for epoch in range(start_epoch, last):
        train_loader.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        set_mode(model)  # the plain model's flags too (with fuse, `net` is another module)
        try:
            stats = train_one_epoch(runner, train_loader, optimizer, loss_fn, scheduler,
                                    scheduler_interval, progress, train_mode=train_mode,
                                    desc=f"epoch {epoch + 1}/{epochs}", epoch=epoch + 1, task=task)
            for what, bad in (("weights", first_non_finite(model)),  # once per epoch, before
                              ("optimizer", first_non_finite_state(optimizer, model))):  # saving
                if bad is not None:
                    raise TrainingDiverged(what, epoch + 1, len(train_loader), len(train_loader),
                                           optimizer.param_groups[0]["lr"], name=bad)
        except TrainingDiverged as exc:
            exc.history = {k: v for k, v in history.items() if k != "best_state"}
            exc.kept = where_kept(checkpoint_path, saved_epoch, resume_from, start_epoch)
            raise
        if data_parallel is not None:  # each rank saw its slice: the mean is the batch's
            stats["loss"], stats["accuracy"] = data_parallel.mean([stats["loss"],
                                                                   stats["accuracy"]])
            stats["images_per_s"] *= data_parallel.size
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(stats["loss"])
        line = f"epoch {epoch + 1:>3}/{epochs}  train loss {stats['loss']:.4f}"
        if task.scores_training_batches:
            history[f"train_{score}"].append(stats["accuracy"])
            line += f" acc {stats['accuracy']:.4f}"
        history["lr"].append(lr)
        history["seconds"].append(stats["seconds"])
        if val_split is not None:
            val_loss, val_score = task.validate(net, val_split)
            history["val_loss"].append(val_loss)
            history[f"val_{score}"].append(val_score)
            shown = "acc" if score == "acc" else task.score_name
            line += f"  val loss {val_loss:.4f} {shown} {val_score:.4f}"
            if history[f"best_val_{score}"] is None or val_score > history[f"best_val_{score}"]:
                history[f"best_val_{score}"], history["best_epoch"] = val_score, epoch + 1
                history["best_state"] = copy.deepcopy(model.state_dict())
        line += f"  lr {lr:.3g}  {stats['images_per_s']:.0f} img/s  {stats['seconds']:.1f}s"
        if log:
            log(line)
        if checkpoint_path is not None:
            extra = {"history": {k: v for k, v in history.items() if k != "best_state"},
                     "best_state": history.get("best_state") or {}}
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, epoch=epoch + 1,
                            config=config, extra=extra)
            saved_epoch = epoch + 1
    return history


def where_kept(checkpoint_path, saved_epoch: int | None, resume_from=None,
               resumed_epoch: int = 0) -> str | None:
    """Where a run that stopped has its last good weights, in words (None: nowhere on disk).

    A file already at ``checkpoint_path`` that this run did not write is an earlier run's
    (a run into a folder that holds one), and is said to be; a run resumed from another
    file has its last good weights there, at ``resumed_epoch``.

    Args:
        checkpoint_path: The run's checkpoint file, or None.
        saved_epoch: The epoch this run last wrote to ``checkpoint_path`` (None: it wrote none).
        resume_from: The checkpoint the run resumed from, or None.
        resumed_epoch: The epoch of ``resume_from``.

    Returns:
        Such as ``"the last good checkpoint, runs/x/model.npz, holds epoch 3"``; None:
        nowhere.
    """
    if saved_epoch is not None:
        return f"the last good checkpoint, {checkpoint_path}, holds epoch {saved_epoch}"
    parts = []
    if checkpoint_path is not None:
        parts.append(f"{checkpoint_path} is an earlier run's; this run wrote none"
                     if Path(checkpoint_path).exists()
                     else "no checkpoint was written (no epoch finished)")
    if resume_from is not None:
        parts.append(f"the last good weights are in {resume_from} (epoch {resumed_epoch}), "
                     f"which this run resumed from")
    return "; ".join(parts) or None


def recalibrate_batchnorm(model, images, batch_size: int = 128):
    """Re-estimate every BatchNorm's running statistics for the current weights.

    After a short run the running averages lag the weights (they mix statistics
    of many earlier weight settings), so eval-mode accuracy can sit far below
    training accuracy. One pass over ``images`` in training mode with a
    cumulative average (momentum None) replaces them by the statistics of the
    final network.

    It runs ``model`` as given: a fused view (``tinymbv2.fuse(model)``) works as well
    and faster, since its BatchNorms are the model's and read their momentum as the
    plain layers do.

    Args:
        model: The model (or its fused view).
        images: Training images (N, C, H, W), normalised as in training.
        batch_size: The images per forward pass.

    Returns:
        The model, in eval mode.
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
