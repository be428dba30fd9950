"""The configuration of a training run, in one place (nanoGPT style): ``TrainConfig``.

Every choice that defines a run is a field with its default; the allowed names of the
choices are the tuples below (the command line offers the same). A run saves its
configuration in the checkpoint and in ``metrics.json`` (:func:`saved_config`), with
what the data told it (classes, channels, size, normalisation), so the model can be
rebuilt and fed new images the way it was trained.
"""
from __future__ import annotations

import dataclasses

import numpy as np

OPTIMIZERS = ("sgd", "rmsprop", "rmsprop-tf", "adam", "adamw")
LOSSES = ("ce", "focal", "dice")
SCHEDULES = ("onecycle", "cosine", "exponential", "none")
ARCHS = ("mobilenet_v2", "seed_article")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved in the checkpoint and metrics.json."""

    dataset: str = "mnist5k"
    data_dir: str | None = None
    image_size: int | None = None  # resize images to this square size (None: keep)
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
    shift: int = 2  # random +-shift in pixels (0: off)
    flip: bool = False
    seed: int = 0
    out: str = "runs/run"
    fuse: bool = True  # run through tinymbv2.fusion.fuse (False: the plain layers, to step through)

    def validate(self) -> "TrainConfig":
        """Check the choices and the numbers; returns the config itself."""
        for name, allowed in (("optimizer", OPTIMIZERS), ("loss", LOSSES),
                              ("schedule", SCHEDULES), ("arch", ARCHS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train: expected {name} in {allowed}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train: expected {name} >= 1, got {getattr(self, name)}")
        if self.width <= 0 or self.lr <= 0:
            raise ValueError(f"train: expected width > 0 and lr > 0, got {self.width} and {self.lr}")
        if not isinstance(self.fuse, bool):
            raise TypeError(f"train: expected fuse True or False, got {self.fuse!r}")
        return self

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
