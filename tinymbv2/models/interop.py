"""Moving weights between tinymbv2 and torchvision (torch is imported only here, lazily).

The module names of [MobileNetV2][tinymbv2.models.mobilenetv2.MobileNetV2] equal
torchvision's, so the two ``state_dict``s have the same keys and shapes (314 entries at
width 1.0, ``num_batches_tracked`` included). Both directions are one line:

    model.load_state_dict({k: v.numpy() for k, v in tv_model.state_dict().items()})
    tv_model.load_state_dict(to_torch_state_dict(model))
"""
from __future__ import annotations

from .mobilenetv2 import MobileNetV2


def to_torch_state_dict(model) -> dict:
    """The state_dict of ``model`` as torch tensors, ready for ``torch_model.load_state_dict``."""
    import torch

    return {k: torch.from_numpy(v) for k, v in model.state_dict().items()}


def from_torchvision(tv_model) -> MobileNetV2:
    """A tinymbv2 MobileNetV2 with the architecture and weights of a torchvision one.

    The architecture is read from the torchvision modules (stem width and stride,
    every block's (inp, oup, stride, t), head width, classes, dropout), so any
    width, a custom ``inverted_residual_setting`` or patched strides are mirrored.
    The copy starts in the mode (train/eval) the torchvision model is in.

    Args:
        tv_model: A ``torchvision.models.MobileNetV2``.

    Returns:
        The [MobileNetV2][tinymbv2.models.mobilenetv2.MobileNetV2] copy.
    """
    from torchvision.models.mobilenetv2 import InvertedResidual as TVBlock

    feats = tv_model.features
    stem_conv = feats[0][0]
    stem = (stem_conv.out_channels, stem_conv.stride[0])
    blocks = []
    for block in list(feats)[1:-1]:
        if not isinstance(block, TVBlock):
            raise TypeError(
                f"from_torchvision: expected InvertedResidual blocks, got {type(block).__name__}"
            )
        convs = [m for m in block.conv.modules() if type(m).__name__ == "Conv2d"]
        inp, hidden, oup = convs[0].in_channels, convs[-1].in_channels, convs[-1].out_channels
        t = 1 if len(convs) == 2 else hidden / inp
        if int(t) == t:
            t = int(t)
        blocks.append((inp, oup, convs[-2].stride[0], t))  # the depthwise conv's stride
    linear = tv_model.classifier[1]
    model = MobileNetV2.from_blocks(
        in_channels=stem_conv.in_channels, stem=stem, blocks=blocks,
        last_channel=feats[-1][0].out_channels, num_classes=linear.out_features,
        dropout=tv_model.classifier[0].p,
    )
    # torchvision fixes each block's residual when it builds it: a stride patched
    # afterwards (the usual small-input trick) keeps the block's original choice
    for ours, theirs in zip(model.blocks, list(feats)[1:-1]):
        ours.use_res_connect = bool(theirs.use_res_connect)
    if stem_conv.weight.dtype == torch_float64():
        model.double()
    model.load_state_dict({k: v.detach().cpu().numpy() for k, v in tv_model.state_dict().items()})
    return model.train(tv_model.training)


def torch_float64():
    import torch

    return torch.float64
