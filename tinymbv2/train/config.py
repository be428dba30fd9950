"""The configuration of a training run, in one place (nanoGPT style): ``TrainConfig``.

Every choice that defines a run is a field with its default; the allowed names of the
choices are the tuples below (the command line offers the same). A run saves its
configuration in the checkpoint and in ``metrics.json``
([saved_config][tinymbv2.train.config.saved_config]), with what the data told it
(classes, channels, size, normalisation), so the model can be rebuilt and fed new images
the way it was trained.

Some fields default to their task's recipe (``TASK_DEFAULTS``): ``epochs``, ``batch_size``,
``lr``, ``weight_decay`` and ``loss`` (and, for detection and segmentation, ``train_scenes``;
for segmentation, ``image_size``) left at None take the classifier's, the detector's or the segmenter's values when the config is made,
so ``TrainConfig(task="detect")`` is the detection recipe, and a value given explicitly always
wins.

Two fields are the segmenter's only: ``head`` and ``output_stride`` (Mobile DeepLabv3,
[deeplabv3_mobilenet_v2][tinymbv2.models.deeplabv3.deeplabv3_mobilenet_v2]); they too take
the segmentation recipe's values when None, and stay None in the other tasks, which refuse
a value.

A field may be "auto" (``shift=None``):
[TrainConfig.resolved][tinymbv2.train.config.TrainConfig.resolved] makes the choice
once the images are known, and the run saves the value it used.

Resuming a run (``run_training(config, resume=...)``) compares the checkpoint's saved
configuration with the new one ([resume_conflicts][tinymbv2.train.config.resume_conflicts],
[check_resume][tinymbv2.train.config.check_resume]): only the fields in ``RESUMABLE`` may
differ.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..optim.optimizer import check_hyper

OPTIMIZERS = ("sgd", "rmsprop", "rmsprop-tf", "adam", "adamw")
LOSSES = ("ce", "focal", "dice", "ce+dice")
SCHEDULES = ("onecycle", "cosine", "exponential", "none")
ARCHS = ("mobilenet_v2", "seed_article")
ACTIVATIONS = ("relu6", "relu")  # the classifier's activation (models.mobilenetv2.ACTIVATIONS)
TASKS = ("classify", "detect", "segment")
DETECTION_DATASETS = ("mnist-scenes",)   # datasets with boxes: what --task detect trains on
SEGMENTATION_DATASETS = ("mnist-scenes",)  # datasets with masks: what --task segment trains on
SCENE_DATASETS = tuple(dict.fromkeys(DETECTION_DATASETS + SEGMENTATION_DATASETS))  # not classify's
SCENE_IMAGE_SIZE = 128                    # the scenes' side when image_size is None
DETECTION_IMAGE_SIZE = SCENE_IMAGE_SIZE   # its first name, from when only detection had scenes
SEG_HEADS = ("aspp", "simple", "lraspp")  # deeplabv3_mobilenet_v2's heads
OUTPUT_STRIDES = (16, 8)                  # the segmenter's input size over its head's map
SEGMENTATION_LOSSES = ("ce", "dice", "ce+dice")  # per pixel; focal is the classifier's only

# Each task's recipe: what epochs, batch_size, lr, weight_decay, loss (and train_scenes,
# image_size) left at None become.
# Classification: MobileNetV2-0.5 on 28 px digits (chapter 10). Detection: SSDLite on
# MNIST scenes, whose loss (a sum over matched default boxes, divided by their number) is
# noisier than a classifier's: smaller batches, a lower peak rate and the weight decay of
# the paper's detection recipe (4e-5); see docs/benchmarks.md for how they were chosen.
TASK_DEFAULTS = {
    "classify": {"epochs": 8, "batch_size": 64, "lr": 0.1, "weight_decay": 5e-4, "loss": "ce"},
    "detect": {"epochs": 5, "batch_size": 16, "lr": 0.05, "weight_decay": 4e-5,
               "train_scenes": 16000, "loss": "ce"},
    # Segmentation: Mobile DeepLabv3 with LR-ASPP (logits at output stride 8) on MNIST scenes
    # of 256 px, drawn as the 128 px ones with every length doubled (scaled_digit_sides): at
    # 128 px a stroke is 1-4 px wide, and even the best logits on a grid 16 times coarser
    # score an mIoU near 0.5 (chapter 17.2); cross-entropy plus Dice because the background
    # holds 95% of the pixels. See docs/benchmarks.md.
    "segment": {"epochs": 4, "batch_size": 8, "lr": 0.05, "weight_decay": 4e-5,
                "train_scenes": 4000, "image_size": 256, "loss": "ce+dice", "head": "lraspp",
                "output_stride": 16},
}

# ... and where a bundled dataset needs its own: scikit-learn's 8x8 digits (1,079 training
# images, 17 steps an epoch) take the classifier's peak rate of 0.1 badly. Its trajectory
# swings from run to run of the epochs and from CPU to CPU (float rounding): on the AMD EPYC
# host of 2026-12-07 MobileNetV2-0.35 reached 71%, 37%, 95%, 94% and 50% test accuracy after
# 4 to 8 epochs, against 91%, 92%, 94%, 97% and 95% at 0.05 (the rate docs/benchmarks.md's
# quantization runs on the digits already used).
DATASET_DEFAULTS = {("classify", "digits"): {"lr": 0.05}}

# What may change when a run is resumed: how long it trains (the schedule is stretched to the
# new length, see tinymbv2.train.trainer.fit), where it writes, whether it runs fused (the same
# arithmetic to rounding) and where its files are read from (the data itself is compared through
# what it told the run: classes, channels, size, normalisation). Everything else defines the
# run: another optimizer, schedule, dataset or width would be another run under the old name.
RESUMABLE = ("epochs", "out", "fuse", "data_dir")

# How the run asked for its images to be read, compared on resume through what it got instead:
# the channels and the size the data told it (in_channels, input_size). A digits run with
# channels None (the dataset's own, grey) and one with channels 1 read the very same images,
# as do image_size None and 8; channels 3, or image_size 16, give another in_channels or
# input_size, and that difference is named.
COMPARED_THROUGH_DATA = ("channels", "image_size")


def auto_shift(height: int, width: int) -> int:
    """The random shift, in pixels, for images of ``height x width``: ``min(h, w) // 14``.

    MNIST's digits are 20 px drawn in a 28 px frame, so a shift of 2 px (1/14 of the side)
    moves them about without pushing a stroke out; it is the usual MNIST augmentation. The
    same fraction gives 2 px at 32 px (CIFAR-10), 16 px at 224 px and **0 at 8 px**:
    scikit-learn's 8x8 digits fill their frame, and one pixel there is an eighth of the
    digit (lr 0.1, 6 epochs: 94% test accuracy at shift 0, 32% at shift 1, 30% at shift 2),
    so they are not shifted at all.

    Args:
        height: The images' height, in pixels.
        width: The images' width, in pixels.

    Returns:
        The shift, in pixels.
    """
    return min(int(height), int(width)) // 14


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved in the checkpoint and metrics.json.

    Args:
        task: One of ``TASKS``: ``"classify"`` (a classifier, scored by accuracy) or
            ``"detect"`` (SSDLite on MobileNetV2, on a dataset of ``DETECTION_DATASETS``,
            scored by mAP; no augmentation, cross-entropy and SSD's box loss) or
            ``"segment"`` (Mobile DeepLabv3, on a dataset of ``SEGMENTATION_DATASETS``,
            scored by mIoU; no augmentation; a per-pixel loss of ``SEGMENTATION_LOSSES``).
        dataset: The dataset's name (see [load_dataset][tinymbv2.data.datasets.load_dataset];
            ``"mnist-scenes"``, [load_mnist_scenes][tinymbv2.data.scenes.load_mnist_scenes],
            for detection and segmentation).
        data_dir: The folder the file-based datasets read.
        image_size: Resize the images to this square size (None: keep); for detection and
            segmentation, the scenes' side (None: ``SCENE_IMAGE_SIZE`` for detection, the
            task's for segmentation, whose digits grow with the side:
            [scaled_digit_sides][tinymbv2.data.scenes.scaled_digit_sides]).
        train_scenes: Detection and segmentation only: how many training scenes to make
            (None: the task's);
            the validation and test scenes stay those of
            [load_mnist_scenes][tinymbv2.data.scenes.load_mnist_scenes]'s defaults.
        channels: Read the images as 1 (grey) or 3 (RGB) channels (None: the dataset's own).
        arch: One of ``ARCHS``: ``"mobilenet_v2"`` or ``"seed_article"``.
        width: The width multiplier.
        head: Segmentation only: the head of ``SEG_HEADS`` on the 320-channel map (``"aspp"``:
            DeepLabv3's ASPP; ``"simple"``: the paper's head without atrous branches;
            ``"lraspp"``: torchvision's LR-ASPP; None: the task's); None in another task.
        output_stride: Segmentation only: 16 (Table 7) or 8, the input size over the head's
            map (the backbone's later strides become dilation; None: the task's); None in another task.
        small_input: The network's stride-1 stem and stage for small images.
        activation: Classification only: ``"relu6"`` (the paper's) or ``"relu"`` in every
            layer that has an activation (the comparison of section 3.2: which one survives
            8-bit quantization better).
        dropout: The dropout before the classifier.
        epochs: The epochs to train (None: the task's, ``TASK_DEFAULTS``).
        batch_size: The images per step (None: the task's).
        optimizer: One of ``OPTIMIZERS``.
        lr: The learning rate, the peak one for ``"onecycle"`` (None: the task's).
        momentum: The momentum of SGD and RMSprop.
        weight_decay: The L2 decay of the weights, not of BatchNorm parameters and biases
            (None: the task's).
        schedule: One of ``SCHEDULES``.
        loss: One of ``LOSSES`` (None: the task's): cross-entropy, focal, Dice or cross-entropy plus Dice
            (``"ce+dice"``: segmentation only, [ce_dice_loss][tinymbv2.functional.losses.ce_dice_loss]);
            a segmenter's is per pixel and takes ``SEGMENTATION_LOSSES`` (no focal).
        label_smoothing: The label smoothing of the cross-entropy.
        shift: The random translation, in pixels on each axis: ``None`` is "auto", scaled
            to the image size by [auto_shift][tinymbv2.train.config.auto_shift]
            (``min(h, w) // 14``: 2 px at 28 px, 0 px at 8 px); an int sets it (0: off). The
            run resolves it once the data is loaded
            ([resolved][tinymbv2.train.config.TrainConfig.resolved]) and saves the number it
            used.
        flip: Random horizontal flips (not for digits).
        seed: The seed of the initialisation, the order and the augmentation.
        out: The run's folder.
        fuse: Run through [fuse][tinymbv2.fusion.fuse] (False: the plain layers, to step
            through).
    """

    task: str = "classify"
    dataset: str = "mnist5k"
    data_dir: str | None = None
    image_size: int | None = None  # resize images to this square size (None: keep)
    train_scenes: int | None = None  # detect/segment: training scenes made (None: TASK_DEFAULTS)
    channels: int | None = None  # read images as 1 (grey) or 3 (RGB) (None: the dataset's own)
    arch: str = "mobilenet_v2"
    width: float = 0.5
    head: str | None = None  # segment only: one of SEG_HEADS (None: TASK_DEFAULTS)
    output_stride: int | None = None  # segment only: 16 or 8 (None: TASK_DEFAULTS)
    small_input: bool = True
    activation: str = "relu6"  # classify only: "relu6" (the paper's) or "relu"
    dropout: float = 0.2
    epochs: int | None = None  # None: TASK_DEFAULTS[task] (DATASET_DEFAULTS), as the three below
    batch_size: int | None = None
    optimizer: str = "sgd"
    lr: float | None = None  # the peak learning rate for "onecycle"
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "onecycle"
    loss: str | None = None  # None: TASK_DEFAULTS[task] ("ce" but for segment)
    label_smoothing: float = 0.0
    shift: int | None = None  # random +-shift in pixels (0: off; None: auto, min(h, w) // 14)
    flip: bool = False
    seed: int = 0
    out: str = "runs/run"
    fuse: bool = True  # run through tinymbv2.fusion.fuse (False: the plain layers, to step through)

    def __post_init__(self):
        # an unknown task keeps its Nones: validate() names the task; a classifier's
        # train_scenes stays None (it has no scenes)
        for name, value in {**TASK_DEFAULTS.get(self.task, {}),
                            **DATASET_DEFAULTS.get((self.task, self.dataset), {})}.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def validate(self) -> "TrainConfig":
        """Check the choices and the numbers; returns the config itself.

        Every number must be finite: an infinite learning rate (or a momentum of 1 or
        more, whose velocity grows without bound) turns the weights into inf and NaN at the
        first steps, and the run would only say so by its loss.

        Raises:
            ValueError: An unknown choice or a number out of its range.
            TypeError: A flag that is not True or False.
        """
        for name, allowed in (("task", TASKS), ("optimizer", OPTIMIZERS), ("loss", LOSSES),
                              ("schedule", SCHEDULES), ("arch", ARCHS),
                              ("activation", ACTIVATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train: expected {name} in {allowed}, got {getattr(self, name)!r}")
        if self.task == "segment":
            if self.head not in SEG_HEADS:
                raise ValueError(f"train: expected head in {SEG_HEADS}, got {self.head!r}")
            if not _is_int(self.output_stride) or self.output_stride not in OUTPUT_STRIDES:
                raise ValueError(f"train: expected output_stride in {OUTPUT_STRIDES}, got "
                                 f"{self.output_stride!r}")
        for name in ("epochs", "batch_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"train: expected {name} an integer >= 1, got "
                                 f"{getattr(self, name)!r}")
        self._validate_task()
        for name in ("lr", "width"):  # finite (check_hyper), and > 0
            check_hyper("train", name, getattr(self, name), low=None)
            if getattr(self, name) <= 0:
                raise ValueError(f"train: {name} must be > 0, got {getattr(self, name)}")
        check_hyper("train", "momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_hyper("train", "weight_decay", self.weight_decay, 0.0)
        check_hyper("train", "dropout", self.dropout, 0.0, 1.0)
        check_hyper("train", "label_smoothing", self.label_smoothing, 0.0, 1.0)
        if self.shift is not None and (not _is_int(self.shift) or self.shift < 0):
            raise ValueError(f"train: expected shift an integer >= 0 (pixels) or None (auto: "
                             f"min(h, w) // 14), got {self.shift!r}")
        if self.image_size is not None and (not _is_int(self.image_size) or self.image_size < 1):
            raise ValueError(f"train: expected image_size an integer >= 1 (pixels) or None (the "
                             f"images' own), got {self.image_size!r}")
        if self.channels not in (None, 1, 3) or isinstance(self.channels, bool):
            raise ValueError(f"train: expected channels 1, 3 or None (the dataset's own), "
                             f"got {self.channels!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"train: expected seed an integer >= 0, got {self.seed!r}")
        for name in ("small_input", "flip", "fuse"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"train: expected {name} True or False, got "
                                f"{getattr(self, name)!r}")
        return self

    def _validate_task(self) -> None:
        """A detection run trains SSDLite on MobileNetV2 on a dataset with boxes, a
        segmentation run Mobile DeepLabv3 on one with masks, both without the augmentations
        that would move pixels but not boxes or masks; a classification run does not take a
        scenes dataset; the segmenter's fields stay None in the other tasks."""
        if self.task != "classify" and self.activation != "relu6":
            raise ValueError(f"train: activation {self.activation!r} is for task 'classify' (the "
                             f"detector and the segmenter keep the paper's ReLU6), got task "
                             f"{self.task!r}")
        if self.task != "segment":
            for name in ("head", "output_stride"):
                if getattr(self, name) is not None:
                    raise ValueError(f"train: {name} is for task 'segment' (Mobile DeepLabv3), "
                                     f"got {getattr(self, name)!r} for task {self.task!r} (leave "
                                     f"it None)")
        if self.task == "classify":
            if self.dataset in SCENE_DATASETS:
                raise ValueError(f"train: {self.dataset} is a dataset of scenes (boxes and masks, "
                                 f"not one label per image): train it with task 'detect' or "
                                 f"'segment' (--task detect, --task segment)")
            if self.train_scenes is not None:
                raise ValueError(f"train: train_scenes is for tasks 'detect' and 'segment' (the "
                                 f"training scenes made), got {self.train_scenes!r} for task 'classify'")
            if self.loss == "ce+dice":
                raise ValueError("train: loss 'ce+dice' is for task 'segment' (per pixel); a "
                                 "classifier takes 'ce', 'focal' or 'dice'")
            return
        if not _is_int(self.train_scenes) or self.train_scenes < 1:
            raise ValueError(f"train: expected train_scenes an integer >= 1, got {self.train_scenes!r}")
        if self.task == "detect":
            why = ("SSDLite on MobileNetV2, SSD's loss, no shift or flip: they would move the "
                   "digits but not their boxes")
            wrong = [("dataset", self.dataset, DETECTION_DATASETS), ("loss", self.loss, ("ce",)),
                     ("label_smoothing", self.label_smoothing, (0.0,))]
        else:
            why = ("Mobile DeepLabv3 on MobileNetV2, a per-pixel loss (focal is the classifier's), "
                   "no shift or flip: they would move the digits but not their masks")
            wrong = [("dataset", self.dataset, SEGMENTATION_DATASETS),
                     ("loss", self.loss, SEGMENTATION_LOSSES)]
        wrong += [("arch", self.arch, ("mobilenet_v2",)), ("shift", self.shift, (None, 0)),
                  ("flip", self.flip, (False,))]
        for name, value, want in wrong:
            if value not in want:
                raise ValueError(f"train: task {self.task!r} takes {name} in {want} ({why}), "
                                 f"got {value!r}")
        if self.task == "segment" and self.head in ("aspp", "simple") and self.batch_size < 2:
            raise ValueError(f"train: task 'segment' with head {self.head!r} needs batch_size >= 2: "
                             f"its image-pooling branch normalises a 1x1 map per image, and a "
                             f"BatchNorm over one value per channel has no variance to train "
                             f"on (PyTorch refuses it), got batch_size {self.batch_size}")

    def resolved(self, height: int, width: int) -> "TrainConfig":
        """A copy with the "auto" choices made for images of ``height x width``.

        ``shift=None`` becomes [auto_shift][tinymbv2.train.config.auto_shift]``(height, width)``
        (0 for detection and segmentation).

        Args:
            height: The images' height, in pixels.
            width: The images' width, in pixels.

        Returns:
            The resolved copy.
        """
        if self.task in ("detect", "segment"):
            shift = 0  # a shifted scene would need shifted boxes and masks
        else:
            shift = auto_shift(height, width) if self.shift is None else int(self.shift)
        return dataclasses.replace(self, shift=shift)

    @classmethod
    def from_saved(cls, saved: dict) -> "TrainConfig":
        """The TrainConfig inside a saved configuration.

        Fields it lacks (an older run's) take their defaults, and the keys the data added are
        left out.

        Args:
            saved: A dict as [saved_config][tinymbv2.train.config.saved_config] writes it.

        Returns:
            The config.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in fields})


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def saved_config(config: TrainConfig, splits, normalize) -> dict:
    """What a run saves: the config's fields, and what its data told it.

    That is the classes, the image shape and the normalisation.

    Args:
        config: The run's [TrainConfig][tinymbv2.train.config.TrainConfig].
        splits: Its [DatasetSplits][tinymbv2.data.splits.DatasetSplits].
        normalize: Its [Normalize][tinymbv2.data.transforms.Normalize].

    Returns:
        A JSON-able dict.
    """
    return {**dataclasses.asdict(config), "num_classes": splits.num_classes,
            "in_channels": splits.image_shape[0], "input_size": list(splits.image_shape[1:]),
            "class_names": list(splits.class_names),
            "norm_mean": np.asarray(normalize.mean).ravel().tolist(),
            "norm_std": np.asarray(normalize.std).ravel().tolist()}


def resume_conflicts(before: dict, now: dict) -> list[tuple[str, object, object]]:
    """The fields in which a new run differs from a checkpoint's, and may not on resume.

    The fields in ``RESUMABLE`` are left out, and so are ``channels`` and ``image_size``,
    which are compared through the data's ``in_channels`` and ``input_size``
    (``COMPARED_THROUGH_DATA``). A field an older checkpoint lacks counts as its default (a
    data field, which has none, is not compared).

    Args:
        before: The checkpoint's saved configuration.
        now: The new run's, both as [saved_config][tinymbv2.train.config.saved_config]
            writes them.

    Returns:
        ``[(field, value before, value now), ...]`` in the order of ``now``.
    """
    defaults = dataclasses.asdict(TrainConfig())
    conflicts = []
    for key, value in now.items():
        if (key in RESUMABLE or key in COMPARED_THROUGH_DATA
                or (key not in before and key not in defaults)):
            continue
        old = before[key] if key in before else defaults[key]
        if _plain(old) != _plain(value):
            conflicts.append((key, old, value))
    return conflicts


def _plain(value):
    """Tuples as lists, as JSON gives them back, so that a value compares with its saved self."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check_resume(checkpoint, before, now: dict) -> None:
    """Refuse to resume ``checkpoint`` into a run whose configuration differs outside ``RESUMABLE``.

    Args:
        checkpoint: The checkpoint's path, for the message.
        before: Its saved configuration (None when it holds none).
        now: The new run's saved configuration
            ([saved_config][tinymbv2.train.config.saved_config]).

    Raises:
        ValueError: One line naming the (first) field and both values, or that the
            checkpoint holds no configuration.
    """
    if not isinstance(before, dict) or not before:
        raise ValueError(f"resume: {checkpoint} holds no saved configuration to compare this "
                         f"run with; not written by a training run")
    conflicts = resume_conflicts(before, now)
    if conflicts:
        field, old, new = conflicts[0]
        more = (f" (and {len(conflicts) - 1} more: {', '.join(c[0] for c in conflicts[1:])})"
                if len(conflicts) > 1 else "")
        raise ValueError(f"resume: {checkpoint} was trained with {field} {old!r}, this run asks "
                         f"for {new!r}{more}; a resumed run may change only "
                         f"{', '.join(RESUMABLE)} (and stop_after, progress): to change the "
                         f"rest, start a new run in another folder")
