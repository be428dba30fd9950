"""Chapter 11's checks answer common wrong answers with the hint meant for them."""
from tinymbv2 import optim
from tinymbv2.exercises import check_finetune_optimizer, check_freeze, check_frozen_bn_eval
from tinymbv2.nn import BatchNorm2d


def freeze(model, k, unfreeze_first=True, keep=None):
    if unfreeze_first:
        model.requires_grad_(True)
    blocks = list(model.features)
    for block in blocks[:len(blocks) - (k if keep is None else keep(k))]:
        block.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def groups(model, backbone, head):
    return [{"params": list(model.features.parameters()), "lr": backbone},
            {"params": list(model.classifier.parameters()), "lr": head}]


def test_freeze_hints():
    assert check_freeze(freeze).message == "correct (5 cases)"
    only_freezes = check_freeze(lambda m, k: freeze(m, k, unfreeze_first=False)).message
    assert only_freezes.startswith("not yet: train_last_blocks=2: features.17.conv.0.0.weight is frozen")
    assert "this model was frozen by an earlier call: make every parameter trainable first" in only_freezes
    off_by_one = check_freeze(lambda m, k: freeze(m, k, keep=lambda k: k + 1)).message
    assert off_by_one == ("not yet: train_last_blocks=0: features.18.0.weight trains, but with "
                          "train_last_blocks=0 only the classifier should")

    def head_frozen_too(model, k):
        model.requires_grad_(False)
        for block in list(model.features)[len(model.features) - k:]:
            block.requires_grad_(True)
        return [p for p in model.parameters() if p.requires_grad]
    assert "classifier.1.weight is frozen; the classifier is the new head" in check_freeze(head_frozen_too).message
    assert "return the list of the parameters" in check_freeze(lambda m, k: (freeze(m, k), None)[1]).message
    assert "is not in the list you returned" in check_freeze(lambda m, k: freeze(m, k)[1:]).message


def test_frozen_bn_eval_hints():
    def right(model):
        for m in model.modules():
            if isinstance(m, BatchNorm2d) and not m.weight.requires_grad:
                m.eval()
    assert check_frozen_bn_eval(right).message == "correct (3 cases)"
    assert "every module is in eval mode (model.eval()?)" in check_frozen_bn_eval(lambda m: m.eval()).message

    def every_bn(model):
        for m in model.modules():
            if isinstance(m, BatchNorm2d):
                m.eval()
    assert ("features.16.conv.0.1 (a BatchNorm2d that trains) is in eval mode"
            in check_frozen_bn_eval(every_bn).message)
    frozen_left = check_frozen_bn_eval(lambda m: None).message
    assert "features.0.1 (a BatchNorm2d whose weight is frozen) is in training mode" in frozen_left

    def frozen_modules(model):      # any module without trainable parameters, containers too
        for m in model.modules():
            if not any(p.requires_grad for p in m.parameters()):
                m.eval()
    assert "(Sequential) is in eval mode; only the frozen BatchNorms" in check_frozen_bn_eval(frozen_modules).message


def test_finetune_optimizer_hints():
    right = check_finetune_optimizer(lambda m, b, h: optim.SGD(groups(m, b, h), lr=h, momentum=0.9))
    assert right.message == "correct (3 cases)"
    one_lr = check_finetune_optimizer(lambda m, b, h: optim.SGD(groups(m, b, b), lr=h, momentum=0.9))
    assert one_lr.message == ("not yet: backbone_lr=0.001, head_lr=0.01: classifier.1.weight has learning "
                              "rate 0.001, expected 0.01 (the new head)")
    no_head = check_finetune_optimizer(lambda m, b, h: optim.SGD(groups(m, b, h)[:1], lr=h, momentum=0.9))
    assert "classifier.1.weight is in no group; the optimizer would never update it" in no_head.message
    no_momentum = check_finetune_optimizer(lambda m, b, h: optim.SGD(groups(m, b, h), lr=h))
    assert "a group has momentum 0.0, expected 0.9" in no_momentum.message
    assert "return an optim.SGD, got list" in check_finetune_optimizer(groups).message
