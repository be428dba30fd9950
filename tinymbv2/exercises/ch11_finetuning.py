"""Checks for the exercises of chapter 11. Fine-tuning and transfer learning.

* ``check_freeze``: freeze ``model.features`` but its last ``k`` entries and return what
  still trains, against [freeze_backbone][tinymbv2.train.finetune.freeze_backbone];
* ``check_frozen_bn_eval``: after ``model.train()``, put exactly the frozen BatchNorms back
  into eval mode, against [set_frozen_bn_eval][tinymbv2.train.finetune.set_frozen_bn_eval];
* ``check_finetune_optimizer``: SGD with two parameter groups, a small learning rate for the
  pretrained backbone and a larger one for the new head.
"""
from __future__ import annotations

import numpy as np

from .. import optim
from ..models import mobilenet_v2
from ..nn import BatchNorm2d
from ..train.finetune import freeze_backbone, set_frozen_bn_eval
from .checking import Hint, exercise, expect_equal

__all__ = ["check_freeze", "check_frozen_bn_eval", "check_finetune_optimizer"]


def _model():
    """The chapter's network: MobileNetV2-0.35 for 28x28 grey digits (19 entries in features)."""
    return mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)


def _trains(model) -> dict:
    return {name: bool(p.requires_grad) for name, p in model.named_parameters()}


def _freeze_mistake(got: dict, want: dict, k: int, blocks: int) -> str | None:
    """The first parameter whose ``requires_grad`` is wrong, said as what is wrong with it."""
    for name, should in want.items():
        if got[name] == should:
            continue
        if name.startswith("classifier"):
            return f"{name} is frozen; the classifier is the new head, it must train"
        if should:
            return (f"{name} is frozen, but it is in the last {k} of the {blocks} entries of "
                    "model.features, which train")
        if k == 0:
            return f"{name} trains, but with train_last_blocks=0 only the classifier should"
        return (f"{name} trains, but only the last {k} of the {blocks} entries of "
                "model.features (and the classifier) should")
    return None


@exercise
def check_freeze(answer) -> int:
    """``answer(model, train_last_blocks) -> params``: every parameter of ``model.features``
    gets ``requires_grad=False`` except in its last ``train_last_blocks`` entries; everything
    else (the classifier) trains; returns the list of the parameters that train.

    Cases: k = 0, 2, all 19 entries, then k = 1 and 3 on the model frozen by the calls before
    (so a function that only ever freezes, and never makes a parameter trainable again,
    shows), each compared with ``freeze_backbone`` on a fresh model.

    Args:
        answer: your function, ``freeze(model, train_last_blocks)`` -> the trainable parameters.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    model = _model()
    blocks = len(model.features)
    ks = [0, 2, blocks, 1, 3]
    for k in ks:
        what = f"train_last_blocks={k}"
        params = answer(model, k)
        reference = _model()
        freeze_backbone(reference, k)
        got, want = _trains(model), _trains(reference)
        mistake = _freeze_mistake(got, want, k, blocks)
        if mistake is not None:
            fresh = _model()
            answer(fresh, k)
            if _freeze_mistake(_trains(fresh), want, k, blocks) is None:
                mistake += (" (on a fresh model your function is right, but this model was "
                            "frozen by an earlier call: make every parameter trainable first)")
            raise Hint(f"{what}: {mistake}")
        if params is None:
            raise Hint(f"{what}: return the list of the parameters that still train, "
                       "for the optimizer")
        ids = [id(p) for p in params]
        training = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
        if len(ids) != len(set(ids)):
            raise Hint(f"{what}: a parameter is twice in the list you returned")
        missing = [name for key, name in training.items() if key not in ids]
        if missing:
            raise Hint(f"{what}: {missing[0]} trains but is not in the list you returned "
                       "(the optimizer would never update it)")
        expect_equal(len(ids), len(training), f"{what}: the number of parameters returned")
    return len(ks)


@exercise
def check_frozen_bn_eval(answer) -> int:
    """``answer(model)``: called after ``model.train()`` on a partly frozen model, puts every
    BatchNorm whose weight is frozen into eval mode and changes nothing else.

    Cases: the backbone frozen but its last 0, 3 and 19 entries; each module's mode compared
    with ``set_frozen_bn_eval`` on a copy. A frozen BatchNorm left in training mode, a
    trainable one switched off, and another module (a convolution, the Dropout) switched off
    get a hint naming it.

    Args:
        answer: your function, ``frozen_bn_eval(model)``, which changes modes in place.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    ks = [0, 3, 19]
    for k in ks:
        what = f"backbone frozen but its last {k} entries"
        model, reference = _model(), _model()
        for m in (model, reference):
            freeze_backbone(m, k)
            m.train()
        answer(model)
        set_frozen_bn_eval(reference)
        if not any(m.training for m in model.modules()):
            raise Hint(f"{what}: every module is in eval mode (model.eval()?); only the frozen "
                       "BatchNorms change mode, the rest keeps training")
        for (name, got), (_, want) in zip(model.named_modules(), reference.named_modules()):
            if got.training == want.training:
                continue
            if not isinstance(got, BatchNorm2d):
                raise Hint(f"{what}: {name or 'the model'} ({type(got).__name__}) is in eval "
                           "mode; only the frozen BatchNorms change mode")
            if got.training:
                raise Hint(f"{what}: {name} (a BatchNorm2d whose weight is frozen) is in "
                           "training mode: it would normalise with each batch and overwrite "
                           "the statistics of the pretraining data")
            raise Hint(f"{what}: {name} (a BatchNorm2d that trains) is in eval mode; only the "
                       "frozen ones keep their running statistics")
    return len(ks)


@exercise
def check_finetune_optimizer(answer) -> int:
    """``answer(model, backbone_lr, head_lr) -> optimizer``: an ``optim.SGD`` with momentum 0.9
    whose parameter groups give every parameter of ``model.classifier`` the learning rate
    ``head_lr`` and every other parameter ``backbone_lr``; each parameter in exactly one group.

    Cases: three pairs of learning rates; a parameter left out, given twice or given the other
    learning rate gets a hint naming it.

    Args:
        answer: your function, ``finetune_optimizer(model, backbone_lr, head_lr)`` -> an
            ``optim.SGD``.

    Returns:
        The number of cases run (the ``exercise`` decorator turns it into an
        ``Outcome``).
    """
    cases = [(0.001, 0.01), (0.005, 0.05), (0.0, 0.1)]
    model = _model()
    names = {id(p): name for name, p in model.named_parameters()}
    for backbone_lr, head_lr in cases:
        what = f"backbone_lr={backbone_lr}, head_lr={head_lr}"
        opt = answer(model, backbone_lr, head_lr)
        if not isinstance(opt, optim.SGD):
            raise Hint(f"{what}: return an optim.SGD, got {type(opt).__name__}")
        lr_of: dict = {}
        for group in opt.param_groups:
            if group["momentum"] != 0.9:
                raise Hint(f"{what}: a group has momentum {group['momentum']}, expected 0.9")
            for p in group["params"]:
                name = names.get(id(p), "a tensor that is not the model's")
                if id(p) in lr_of:
                    raise Hint(f"{what}: {name} is in two groups (or twice in one)")
                lr_of[id(p)] = (name, group["lr"])
        for key, name in names.items():
            if key not in lr_of:
                raise Hint(f"{what}: {name} is in no group; the optimizer would never update it")
            want = head_lr if name.startswith("classifier") else backbone_lr
            part = "the new head" if name.startswith("classifier") else "the pretrained backbone"
            if not np.isclose(lr_of[key][1], want):
                raise Hint(f"{what}: {name} has learning rate {lr_of[key][1]}, expected {want} "
                           f"({part})")
    return len(cases)
