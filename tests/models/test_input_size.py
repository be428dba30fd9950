"""tinymbv2.models.input_size: the smallest image a network takes, from its strides, checked
against the shapes ``tinymbv2.models.summary`` propagates."""
from __future__ import annotations

import pytest

from tinymbv2 import nn
from tinymbv2.models import (check_input_size, mobilenet_v2, seed_article_net,
                             smallest_input_size, summary)


def _strided_inputs(model, size):
    """The height of the input of every strided Conv2d, in forward order, per the summary."""
    modules = dict(model.named_modules())
    rows = summary(model, (1, size, size)).rows
    heights, previous = [], size
    for row in rows:
        module = modules.get(row.name)  # rows such as a block's residual add are no module
        if isinstance(module, nn.Conv2d) and module.stride[0] > 1:
            heights.append(previous)
        if len(row.output_shape) == 4:
            previous = row.output_shape[2]
    return heights


@pytest.mark.parametrize("build", [mobilenet_v2, seed_article_net])
@pytest.mark.parametrize("small_input, expected, n_strided", [(False, 17, 5), (True, 5, 3)])
def test_smallest_size_gives_every_strided_conv_two_pixels(build, small_input, expected, n_strided):
    model = build(width_mult=0.35, num_classes=10, in_channels=1, small_input=small_input, seed=0)
    assert smallest_input_size(model) == expected == 2 ** (n_strided - 1) + 1
    assert len(_strided_inputs(model, expected)) == n_strided
    assert min(_strided_inputs(model, expected)) == 2  # the last reduction halves 2 pixels
    assert min(_strided_inputs(model, expected - 1)) == 1  # one less: it is given one pixel
    # every size runs (padding 1 gives each 3x3 conv an output): the limit is the strides'
    assert summary(model, (1, 1, 1)).rows[-1].output_shape == (1, 10)


def test_check_input_size_names_the_caller_and_the_smallest_size():
    model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)
    check_input_size(model, 5, "train")
    check_input_size(model, (5, 28), "predict")
    with pytest.raises(ValueError, match=r"^train: the image size 4 is smaller than this network "
                                         r"takes: .* at least 5x5 px "
                                         r"\(tinymbv2\.models\.smallest_input_size\)$"):
        check_input_size(model, 4, "train")  # the default names no command-line flag
    with pytest.raises(ValueError, match=r"^eval: the image size 4x28 is smaller"):
        check_input_size(model, (4, 28), "eval", "the image size")
    with pytest.raises(ValueError, match=r"^finetune: image_size 3 is smaller"):
        check_input_size(model, 3, "finetune", "image_size")


def test_a_dilated_convolution_needs_its_spread_to_fit():
    """A 3x3 filter at dilation 4 without padding reads 9 pixels: 8 px give it no output."""
    assert smallest_input_size(nn.Sequential(nn.Conv2d(1, 1, 3, dilation=4))) == 9
    assert smallest_input_size(nn.Sequential(nn.Conv2d(1, 1, 3))) == 3
    assert smallest_input_size(nn.Sequential(nn.Conv2d(1, 1, 3, padding=4, dilation=4))) == 1
