"""The configuration of a training run, in one place (nanoGPT style): ``TrainConfig``.

Every choice that defines a run is a field with its default; the allowed names of the
choices are the tuples below (the command line offers the same). A run saves its
configuration in the checkpoint and in ``metrics.json`` (:func:`saved_config`), with
what the data told it (classes, channels, size, normalisation), so the model can be
rebuilt and fed new images the way it was trained.

A field may be "auto" (``shift=None``): :meth:`TrainConfig.resolved` makes the choice
once the images are known, and the run saves the value it used.

Resuming a run (``run_training(config, resume=...)``) compares the checkpoint's saved
configuration with the new one (:func:`resume_conflicts`): only the fields in
``RESUMABLE`` may differ.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

OPTIMIZERS = ("sgd", "rmsprop", "rmsprop-tf", "adam", "adamw")
LOSSES = ("ce", "focal", "dice")
SCHEDULES = ("onecycle", "cosine", "exponential", "none")
ARCHS = ("mobilenet_v2", "seed_article")

# What may change when a run is resumed: how long it trains (the schedule is stretched to the
# new length, see tinymbv2.train.trainer.fit), where it writes, whether it runs fused (the same
# arithmetic to rounding) and where its files are read from (the data itself is compared through
# what it told the run: classes, channels, size, normalisation). Everything else defines the
# run: another optimizer, schedule, dataset or width would be another run under the old name.
RESUMABLE = ("epochs", "out", "fuse", "data_dir")


def auto_shift(height: int, width: int) -> int:
    """The random shift, in pixels, for images of ``height x width``: ``min(h, w) // 14``.

    MNIST's digits are 20 px drawn in a 28 px frame, so a shift of 2 px (1/14 of the side)
    moves them about without pushing a stroke out; it is the usual MNIST augmentation. The
    same fraction gives 2 px at 32 px (CIFAR-10), 16 px at 224 px and **0 at 8 px**:
    scikit-learn's 8x8 digits fill their frame, and one pixel there is an eighth of the
    digit (the default recipe, 6 epochs: 94% test accuracy at shift 0, 32% at shift 1,
    30% at shift 2), so they are not shifted at all.
    """
    return min(int(height), int(width)) // 14


def _finite_in(name: str, value, low: float, high: float | None = None, *, low_open=False,
               high_open=True) -> None:
    """Raise ValueError naming ``train``, the field, the range and the value unless
    ``value`` is a finite number in it (``low < value`` when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"train: expected {name} a number, got {value!r}")
    ok = math.isfinite(value) and (value > low if low_open else value >= low)
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        if high is None:
            expected = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            expected = (f"in {'(' if low_open else '['}{low:g}, {high:g}"
                        f"{')' if high_open else ']'}")
        raise ValueError(f"train: expected {name} {expected}, got {value}")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved in the checkpoint and metrics.json.

    ``shift`` (random translation, pixels, each axis): ``None`` is "auto", scaled to the
    image size by :func:`auto_shift` (``min(h, w) // 14``: 2 px at 28 px, 0 px at 8 px);
    an int sets it (0: off). The run resolves it once the data is loaded
    (:meth:`resolved`) and saves the number it used.
    """

    dataset: str = "mnist5k"
    data_dir: str | None = None
    image_size: int | None = None  # resize images to this square size (None: keep)
    channels: int | None = None  # read images as 1 (grey) or 3 (RGB) (None: the dataset's own)
    arch: str = "mobilenet_v2"
    width: float = 0.5
    small_input: bool = True
    dropout: float = 0.2
    epochs: int = 8
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.1  # the peak learning rate for "onecycle"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    loss: str = "ce"
    label_smoothing: float = 0.0
    shift: int | None = None  # random +-shift in pixels (0: off; None: auto, min(h, w) // 14)
    flip: bool = False
    seed: int = 0
    out: str = "runs/run"
    fuse: bool = True  # run through tinymbv2.fusion.fuse (False: the plain layers, to step through)

    def validate(self) -> "TrainConfig":
        """Check the choices and the numbers; returns the config itself.

        Every number must be finite: an infinite learning rate (or a momentum of 1 or
        more, whose velocity grows without bound) turns the weights into inf and NaN at the
        first steps, and the run would only say so by its loss.
        """
        for name, allowed in (("optimizer", OPTIMIZERS), ("loss", LOSSES),
                              ("schedule", SCHEDULES), ("arch", ARCHS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train: expected {name} in {allowed}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train: expected {name} >= 1, got {getattr(self, name)}")
        _finite_in("lr", self.lr, 0.0, low_open=True)
        _finite_in("width", self.width, 0.0, low_open=True)
        _finite_in("momentum", self.momentum, 0.0, 1.0)
        _finite_in("weight_decay", self.weight_decay, 0.0)
        _finite_in("dropout", self.dropout, 0.0, 1.0, high_open=False)
        _finite_in("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=False)
        if self.shift is not None and (isinstance(self.shift, bool)
                                       or not isinstance(self.shift, (int, np.integer))
                                       or self.shift < 0):
            raise ValueError(f"train: expected shift an integer >= 0 (pixels) or None (auto: "
                             f"min(h, w) // 14), got {self.shift!r}")
        if self.channels not in (None, 1, 3) or isinstance(self.channels, bool):
            raise ValueError(f"train: expected channels 1, 3 or None (the dataset's own), "
                             f"got {self.channels!r}")
        if not isinstance(self.fuse, bool):
            raise TypeError(f"train: expected fuse True or False, got {self.fuse!r}")
        return self

    def resolved(self, height: int, width: int) -> "TrainConfig":
        """A copy with the "auto" choices made for images of ``height x width``:
        ``shift=None`` becomes :func:`auto_shift` ``(height, width)``."""
        shift = auto_shift(height, width) if self.shift is None else int(self.shift)
        return dataclasses.replace(self, shift=shift)

    @classmethod
    def from_saved(cls, saved: dict) -> "TrainConfig":
        """The TrainConfig inside a saved configuration; fields it lacks (an older run's)
        take their defaults, and the keys the data added are left out."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in fields})


def saved_config(config: TrainConfig, splits, normalize) -> dict:
    """What a run saves: the config's fields, plus the classes, the image shape and the
    normalisation of its data (``splits`` a DatasetSplits, ``normalize`` a Normalize)."""
    return {**dataclasses.asdict(config), "num_classes": splits.num_classes,
            "in_channels": splits.image_shape[0], "input_size": list(splits.image_shape[1:]),
            "class_names": list(splits.class_names),
            "norm_mean": np.asarray(normalize.mean).ravel().tolist(),
            "norm_std": np.asarray(normalize.std).ravel().tolist()}


def resume_conflicts(before: dict, now: dict) -> list[tuple[str, object, object]]:
    """The fields that differ between a checkpoint's saved configuration ``before`` and the
    new run's ``now`` (both as :func:`saved_config` writes them) and may not on resume.

    Returns ``[(field, value before, value now), ...]`` in the order of ``now``; the fields
    in ``RESUMABLE`` are left out. A field an older checkpoint lacks counts as its default
    (a data field, which has none, is not compared).
    """
    defaults = dataclasses.asdict(TrainConfig())
    conflicts = []
    for key, value in now.items():
        if key in RESUMABLE or (key not in before and key not in defaults):
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
