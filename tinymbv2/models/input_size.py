r"""The smallest image a network takes, from its convolutions' strides.

A 3x3 convolution padded by 1 gives $\lceil H / s \rceil$ pixels for $H$ at stride $s$:
at least one at any size, so "every output has a pixel" rejects nothing, and a 1x1
image runs through MobileNetV2 without an error. It runs on nothing, though: a stride-2
layer keeps one pixel in two, and given a single pixel it has nothing left to reduce;
everything after it computes on that pixel and the zero padding around it.

So the smallest size is the one at which every strided convolution is given at least
$s$ pixels along each axis to reduce. Through MobileNetV2's stride-2 layers (the stem
and the first block of the rows with s = 2 in Table 2) the size goes
$H \to \lceil H/2 \rceil \to \lceil H/4 \rceil \to \dots$, and the last of the $k$
reductions needs $\lceil H / 2^{k-1} \rceil \ge 2$, i.e. $H \ge 2^{k-1} + 1$:

* the paper's network (k = 5: stem, and the rows of 24, 32, 64 and 160 channels): 17 px;
* ``small_input=True`` (stem and the 24-channel row at stride 1, k = 3): 5 px.

(The network's total stride, 32 or 8, is where the last feature map stops being one
pixel; between the two sizes that map is a single pixel, as it is for 32 px CIFAR images
through the paper's network, a common and working setup.)
"""
from __future__ import annotations

from ..nn import Conv2d


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """Output pixels of a convolution along one axis: floor((H + 2p - d(k - 1) - 1) / s) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _accepts(convs, size: int, axis: int) -> bool:
    for conv in convs:
        k, s, p = conv.kernel_size[axis], conv.stride[axis], conv.padding[axis]
        if size < s:  # a stride-s layer with fewer than s pixels: nothing left to reduce
            return False
        size = _out_size(size, k, s, p, conv.dilation[axis])
        if size < 1:
            return False
    return True


def smallest_input_size(model, largest: int = 1 << 16) -> int:
    """The smallest square image side (px) ``model`` takes.

    Every strided convolution gets at least ``stride`` pixels along each axis, and every
    convolution gives at least one. The convolutions are taken in the order the model
    registers them (``model.modules()``), which is the order they run in MobileNetV2 and
    in any network built of Sequentials; a layer that changes the size without being a
    Conv2d (a pooling layer) is not seen. ``smallest_input_size(mobilenet_v2())`` is 17;
    with ``small_input=True``, 5.

    Args:
        model: The network.
        largest: The largest side tried.

    Returns:
        The side, in pixels.
    """
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    for size in range(1, largest + 1):
        if all(_accepts(convs, size, axis) for axis in (0, 1)):
            return size
    raise ValueError(f"smallest_input_size: no image up to {largest} px fits "
                     f"{type(model).__name__}")


def check_input_size(model, size, who: str, what: str = "the image size") -> None:
    """Raise ``ValueError`` if an image of ``size`` is smaller than ``model`` takes.

    The smallest size is [smallest_input_size][tinymbv2.models.input_size.smallest_input_size]
    of ``model``.

    Args:
        model: The network.
        size: The image size, an int or ``(height, width)``.
        who: Who checks (starts the message).
        what: Where the size came from (``"image_size"``, ``"the images of digits"``), so
            that the message says what to change.

    Raises:
        ValueError: The image is too small for the network.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    smallest = smallest_input_size(model)
    if min(h, w) < smallest:
        shown = f"{h}" if h == w else f"{h}x{w}"
        raise ValueError(f"{who}: {what} {shown} is smaller than this network takes: its "
                         f"strided convolutions need images of at least {smallest}x{smallest} "
                         f"px (tinymbv2.models.smallest_input_size)")


__all__ = ["smallest_input_size", "check_input_size"]
