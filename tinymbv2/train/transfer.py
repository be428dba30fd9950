"""Fine-tuning as a job: a pretrained checkpoint, a new head, a frozen backbone.

Seed section 3.5. ``run_finetune`` loads the checkpoint's network, replaces the
classifier for the new dataset's classes, freezes all but the last
``train_last_blocks`` entries of ``model.features`` (their BatchNorms kept in eval
mode, so their running statistics stay those of the pretraining data), resizes
the new images to the size the network was trained on, and trains.
"""
from __future__ import annotations

import dataclasses

from .finetune import freeze_backbone, replace_classifier, set_frozen_bn_eval
from .job import TrainConfig, load_trained, run_training


def run_finetune(checkpoint, config: TrainConfig, train_last_blocks: int = 0,
                 progress: bool = True, log=print) -> dict:
    """Fine-tune ``checkpoint`` on ``config.dataset``; returns run_training's metrics."""
    model, saved = load_trained(checkpoint)
    size = saved.get("input_size", [None])[0]
    config = dataclasses.replace(config, image_size=config.image_size or size,
                                 width=saved["width"], small_input=saved["small_input"],
                                 arch=saved["arch"])
    from .datasets import load_splits

    probe = load_splits(config.dataset, config.data_dir, config.image_size)
    if probe.image_shape[0] != saved["in_channels"]:
        raise ValueError(
            f"finetune: the checkpoint expects {saved['in_channels']}-channel images, "
            f"dataset {config.dataset!r} has {probe.image_shape[0]}"
        )
    replace_classifier(model, probe.num_classes)
    freeze_backbone(model, train_last_blocks)
    model.train()

    def train_mode(m):
        m.train()
        set_frozen_bn_eval(m)

    log(f"fine-tuning {checkpoint}: new head for {probe.num_classes} classes, "
        f"last {train_last_blocks} feature blocks trainable")
    return run_training(config, progress=progress, log=log, model=model, train_mode=train_mode)
