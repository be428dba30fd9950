"""A whole training run from one configuration, top to bottom: data, model, loop, report.

``run_training(TrainConfig(...))`` is what ``tinymbv2 train`` and ``make demo``
call. It writes ``<out>/model.npz`` (a checkpoint, after every epoch),
``metrics.json`` (test accuracy, the per-epoch history, the configuration),
``learning_curves.png`` and ``confusion_matrix.png``. A detection run
(``task="detect"``) goes through the same loop, checkpoints and resume; its
``metrics.json`` holds the test mAP instead, and ``detections.png`` shows test scenes with
their detections. A segmentation run (``task="segment"``) likewise: its ``metrics.json``
holds the test mIoU, per-class IoU and pixel accuracy, ``masks.png`` shows test scenes
beside their true and predicted masks, and ``confusion_matrix.png`` counts pixels.
"""
from __future__ import annotations

import time
from pathlib import Path

from dataclasses import dataclass, replace

import numpy as np

from ..data import (Compose, DataLoader, Normalize, RandomHorizontalFlip, RandomShift, SceneDataset,
                    SceneSplit, Split, load_dataset, load_mnist_scenes,
                    scaled_digit_sides)
from ..evaluation import evaluate, evaluate_detector, evaluate_segmenter
from ..models import check_input_size
from ..random import manual_seed
from .build import build_loss, build_model, build_optimizer, build_scheduler, param_groups
from .config import SCENE_IMAGE_SIZE, TrainConfig, saved_config
from .report import (detection_run_metrics, diverged_metrics, run_metrics, segmentation_run_metrics,
                     write_report)
from .tasks import Classification, Detection, Segmentation
from .trainer import TrainingDiverged, fit


def run_training(config: TrainConfig, resume: str | None = None, progress: bool = True,
                 log=print, model=None, train_mode=None, stop_after: int | None = None,
                 data_parallel=None) -> dict:
    """Train, evaluate on the held-out test split, write the run folder; return the metrics.

    Resuming: the checkpoint's saved configuration must be this run's except for the
    fields in ``RESUMABLE`` (more epochs, another ``out``, ``fuse``, ``data_dir``);
    ``stop_after`` and ``progress`` are free too. More epochs stretch the schedule
    ([fit][tinymbv2.train.trainer.fit], which reads the checkpoint and compares).

    Args:
        config: The run's [TrainConfig][tinymbv2.train.config.TrainConfig].
        resume: A checkpoint to continue from (``<out>/model.npz``); None: a new run.
        progress: Show progress bars.
        log: Where the per-epoch lines go.
        model: Train this one instead of building ``config.arch`` (fine-tuning passes a
            pretrained, partly frozen model).
        train_mode: ``train_mode(model)`` replaces ``model.train()`` (fine-tuning keeps
            frozen BatchNorms in eval mode).
        stop_after: Stop after this epoch of the schedule (resume later with
            ``resume=<out>/model.npz``).
        data_parallel: A [DataParallel][tinymbv2.distributed.training.DataParallel]: this
            process is one rank of ``mpirun`` (classification only; ``config.batch_size`` is
            the global batch). Rank 0 alone logs, shows progress and writes the run folder;
            the checkpoint records the number of ranks, and a resume must use as many.
            None: one process.

    Returns:
        The metrics ``metrics.json`` holds (on every rank).

    Raises:
        ValueError: A resume that differs in another field (naming it and both values), or
            images smaller than the network takes (``image_size``, or the dataset's own size
            when it is None, below
            [smallest_input_size][tinymbv2.models.input_size.smallest_input_size] of the
            model), before anything is trained.
        TrainingDiverged: The run diverged (a non-finite loss or weights); ``metrics.json``
            says where (``"diverged"``) and the last good checkpoint is kept
            ([TrainingDiverged][tinymbv2.train.trainer.TrainingDiverged]).
    """
    config.validate()
    if data_parallel is not None:
        if config.task != "classify":
            raise ValueError(f"train under mpirun: expected the task 'classify' (detection and "
                             f"segmentation run in one process), got {config.task!r}")
        data_parallel.check_batch_size(config.batch_size)
        if not data_parallel.is_main:  # rank 0 alone speaks and writes
            log, progress = (lambda *args, **kwargs: None), False
    main = data_parallel is None or data_parallel.is_main
    out = Path(config.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    manual_seed(config.seed)

    if config.task == "detect":
        return _run_detection(config, resume, progress, log, model, train_mode, stop_after)
    if config.task == "segment":
        return _run_segmentation(config, resume, progress, log, model, train_mode, stop_after)

    # data: normalised with the training split's statistics, augmented on the fly
    splits = load_dataset(config.dataset, config.data_dir, config.image_size,
                          channels=config.channels)
    config = config.resolved(*splits.image_shape[1:])  # "auto" choices, for these images
    normalize = Normalize.from_data(splits.train.images)
    augment = [RandomShift(config.shift)] if config.shift else []
    augment += [RandomHorizontalFlip()] if config.flip else []
    loader = DataLoader(splits.train.images, splits.train.labels, config.batch_size,
                        seed=config.seed, transform=Compose(augment + [normalize]))
    if data_parallel is not None:
        loader = data_parallel.shard(loader)
    val = Split(normalize(splits.val.images), splits.val.labels)
    test = Split(normalize(splits.test.images), splits.test.labels)

    # model, optimizer, learning-rate schedule, loss
    if model is None:
        model = build_model(config, splits.image_shape[0], splits.num_classes)
    if data_parallel is not None:
        model = data_parallel.prepare(model)
    check_input_size(model, splits.image_shape[1:], "train",
                     "image_size" if config.image_size is not None
                     else f"the image size of {config.dataset}")
    optimizer = build_optimizer(config, param_groups(model, config.weight_decay))
    scheduler, interval = build_scheduler(config, optimizer, len(loader))
    loss_fn = build_loss(config)
    saved = saved_config(config, splits, normalize)  # what rebuilds the model and feeds it
    saved["ranks"] = 1 if data_parallel is None else data_parallel.size  # a resume needs as many
    log(f"{splits!r}\nmodel: {config.arch} width {config.width}, "
        f"{sum(p.size for p in model.parameters()):,} parameters "
        f"({sum(p.size for p in model.parameters() if p.requires_grad):,} trainable); {config.optimizer}, "
        f"lr {config.lr}, {config.schedule}, {config.epochs} epochs of {len(loader)} batches; "
        f"shift {config.shift} px{', flip' if config.flip else ''}")

    # train: a checkpoint after every epoch, the best validation weights kept
    start = time.perf_counter()
    try:
        history = fit(model, optimizer, loader, val, config.epochs, loss_fn, scheduler, interval,
                      checkpoint_path=out / "model.npz" if main else None, resume_from=resume,
                      config=saved, progress=progress, log=log, train_mode=train_mode,
                      stop_after=stop_after, fuse=config.fuse, task=Classification(loss_fn),
                      data_parallel=data_parallel)
    except TrainingDiverged as exc:  # say so in metrics.json; the last good checkpoint stays
        if main:
            write_report(out, diverged_metrics(exc.history, exc.record(), saved,
                                               time.perf_counter() - start))
        raise
    train_seconds = time.perf_counter() - start

    # test, once: the final weights, then those of the best validation epoch (put back after)
    def score():
        return evaluate(model, test.images, test.labels, loss_fn=loss_fn, fuse=config.fuse)

    final = score()
    best_acc = _with_best_weights(model, history, lambda: score()["accuracy"], final["accuracy"])

    # report: metrics.json and the plots
    metrics = run_metrics(history, final, test.labels, best_acc, saved, train_seconds)
    if main:
        write_report(out, metrics)
    log(f"test accuracy {metrics['test_accuracy']:.4f} ({len(test.labels)} held-out images); "
        f"best-val weights: {metrics['best_val_test_accuracy']:.4f}; trained in {train_seconds:.0f}s")
    log(metrics["diagnosis"])
    return metrics



@dataclass(frozen=True)
class SceneData:
    """What a detection or segmentation run trains and scores on.

    ``DetectionData`` and ``SegmentationData`` are its names in either task.

    Args:
        scenes: The [SceneDataset][tinymbv2.data.scenes.SceneDataset] (raw images).
        normalize: The [Normalize][tinymbv2.data.transforms.Normalize] of the training scenes.
        loader: The DataLoader of the training scenes, normalised; its "labels" are the
            scenes' indices, whose boxes or masks the task looks up.
        val: The validation [SceneSplit][tinymbv2.data.scenes.SceneSplit], images normalised.
        test: The test SceneSplit, images normalised.
        size: The scenes' side in pixels.
    """

    scenes: SceneDataset
    normalize: Normalize
    loader: DataLoader
    val: SceneSplit
    test: SceneSplit
    size: int


DetectionData = SegmentationData = SceneData


def detection_data(config: TrainConfig, scenes: SceneDataset | None = None) -> DetectionData:
    """The data of a detection run: ``config.train_scenes`` MNIST scenes of side
    ``config.image_size`` (None: ``SCENE_IMAGE_SIZE``), normalised with the training
    scenes' statistics, in batches of ``config.batch_size`` shuffled from ``config.seed``.

    Args:
        config: The run's [TrainConfig][tinymbv2.train.config.TrainConfig] (``task="detect"``).
        scenes: These scenes instead of making them (a test's few).

    Returns:
        The [DetectionData][tinymbv2.train.run.SceneData].
    """
    return _scene_data(config, scenes, drop_single=False)


def segmentation_data(config: TrainConfig, scenes: SceneDataset | None = None) -> SegmentationData:
    """The data of a segmentation run: as [detection_data][tinymbv2.train.run.detection_data]
    (scenes whose ``masks`` the task reads), except that the scenes' digits grow with the
    canvas ([task_scenes][tinymbv2.train.run.task_scenes]) and a last batch of one scene is
    left out of each epoch.

    ASPP's image-pooling branch normalises a 1x1 map per image: a batch of one gives its
    BatchNorm one value per channel, whose variance is 0 (PyTorch refuses such a batch in
    training). So when ``train_scenes % batch_size == 1`` the loader drops its last batch (a
    different scene each epoch, the order being shuffled); a smaller last batch of 2 or more
    is kept.

    Args:
        config: The run's [TrainConfig][tinymbv2.train.config.TrainConfig] (``task="segment"``).
        scenes: These scenes instead of making them (a test's few).

    Returns:
        The [SegmentationData][tinymbv2.train.run.SceneData].
    """
    return _scene_data(config, scenes, drop_single=True)


def task_scenes(task: str, size: int, n_train: int = 2000) -> SceneDataset:
    """The MNIST scenes a detection or segmentation run of side ``size`` trains and is scored
    on: [load_mnist_scenes][tinymbv2.data.scenes.load_mnist_scenes], with the digits grown
    with the canvas for ``task="segment"``
    ([scaled_digit_sides][tinymbv2.data.scenes.scaled_digit_sides]: a segmenter must resolve
    strokes, a detector only boxes).

    Args:
        task: ``"detect"`` or ``"segment"``.
        size: The scenes' side in pixels.
        n_train: The training scenes.

    Returns:
        The [SceneDataset][tinymbv2.data.scenes.SceneDataset].
    """
    scale = scaled_digit_sides(size) if task == "segment" else None
    return load_mnist_scenes(size=size, n_train=n_train, scale=scale)


def _scene_data(config, scenes, drop_single: bool) -> SceneData:
    size = config.image_size or SCENE_IMAGE_SIZE
    if scenes is None:
        scenes = task_scenes(config.task, size, config.train_scenes)
    normalize = Normalize.from_data(scenes.train.images)
    n = len(scenes.train)
    loader = DataLoader(scenes.train.images, np.arange(n), config.batch_size, seed=config.seed,
                        transform=normalize,
                        drop_last=drop_single and n > 1 and n % config.batch_size == 1)
    val, test = (replace(split, images=normalize(split.images)) for split in (scenes.val, scenes.test))
    return SceneData(scenes, normalize, loader, val, test, size)


def _fit_on_scenes(config: TrainConfig, data: SceneData, model, make_task, what: str, resume,
                   progress, log, train_mode, stop_after):
    """The part of a detection and a segmentation run before the test: the model (``config``'s
    unless given), optimizer, schedule, and the loop, with checkpoints, resume and a
    divergence report. Returns ``(config resolved, model, history, saved config, seconds)``."""
    out = Path(config.out)
    config = config.resolved(data.size, data.size)
    if model is None:
        model = build_model(config, data.scenes.image_shape[0], data.scenes.num_classes)
    optimizer = build_optimizer(config, param_groups(model, config.weight_decay))
    scheduler, interval = build_scheduler(config, optimizer, len(data.loader))
    saved = saved_config(config, data.scenes, data.normalize)
    log(f"{data.scenes!r}\nmodel: {what}, {sum(p.size for p in model.parameters()):,} parameters; "
        f"{config.optimizer}, lr {config.lr}, {config.schedule}, {config.epochs} epochs of "
        f"{len(data.loader)} batches")

    start = time.perf_counter()
    try:
        history = fit(model, optimizer, data.loader, data.val, config.epochs, scheduler=scheduler,
                      scheduler_interval=interval, checkpoint_path=out / "model.npz",
                      resume_from=resume, config=saved, progress=progress, log=log,
                      train_mode=train_mode, stop_after=stop_after, fuse=config.fuse,
                      task=make_task(model))
    except TrainingDiverged as exc:
        write_report(out, diverged_metrics(exc.history, exc.record(), saved,
                                           time.perf_counter() - start))
        raise
    return config, model, history, saved, time.perf_counter() - start


def _run_detection(config: TrainConfig, resume, progress, log, model, train_mode, stop_after) -> dict:
    """``run_training`` for ``task="detect"``: SSDLite on MobileNetV2 on MNIST scenes, the same loop."""
    data = detection_data(config)
    size = data.size
    config, model, history, saved, train_seconds = _fit_on_scenes(
        config, data, model, lambda net: Detection(data.scenes.train, net, (size, size)),
        f"SSDLite on MobileNetV2 width {config.width}", resume, progress, log, train_mode,
        stop_after)

    test = data.test
    targets = test.targets(np.arange(len(test)))
    def score():
        return evaluate_detector(model, test.images, targets, fuse=config.fuse)

    final = score()
    best_map_50 = _with_best_weights(model, history, lambda: score()["map_50"], final["map_50"])
    metrics = detection_run_metrics(history, final, best_map_50, saved, train_seconds)
    write_report(config.out, metrics, scenes=(data.scenes.test.images, final["detections"], targets))
    log(f"test mAP@0.5 {metrics['test_map_50']:.4f}, mAP@[.5:.95] {metrics['test_map']:.4f} "
        f"({len(test)} held-out scenes); best-val weights: mAP@0.5 "
        f"{metrics['best_val_test_map_50']:.4f}; trained in {train_seconds:.0f}s")
    return metrics


def _run_segmentation(config: TrainConfig, resume, progress, log, model, train_mode, stop_after) -> dict:
    """``run_training`` for ``task="segment"``: Mobile DeepLabv3 on MNIST scenes, the same loop."""
    data = segmentation_data(config)
    loss_fn = build_loss(config)
    config, model, history, saved, train_seconds = _fit_on_scenes(
        config, data, model, lambda net: Segmentation(data.scenes.train, loss_fn),
        f"Mobile DeepLabv3 ({config.head} head, output stride {config.output_stride}) on "
        f"MobileNetV2 width {config.width}", resume, progress, log, train_mode, stop_after)

    test = data.test
    def score():
        return evaluate_segmenter(model, test.images, test.masks, loss_fn=loss_fn, fuse=config.fuse)

    final = score()
    best_miou = _with_best_weights(model, history, lambda: score()["miou"], final["miou"])
    metrics = segmentation_run_metrics(history, final, best_miou, saved, train_seconds)
    write_report(config.out, metrics,
                 masks=(data.scenes.test.images, data.scenes.test.masks, final["predictions"]))
    log(f"test mIoU {metrics['test_miou']:.4f}, pixel accuracy {metrics['test_pixel_accuracy']:.4f} "
        f"({len(test)} held-out scenes); best-val weights: mIoU {metrics['best_val_test_miou']:.4f}; "
        f"trained in {train_seconds:.0f}s")
    return metrics


def _with_best_weights(model, history: dict, score, final_score):
    """``score()`` of the best validation epoch's weights (``final_score`` when the run kept
    none); the model gets its final weights back."""
    if not history.get("best_state"):
        return final_score
    current = model.state_dict()
    model.load_state_dict(history["best_state"])
    try:
        return score()
    finally:
        model.load_state_dict(current)
