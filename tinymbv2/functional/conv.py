r"""2-D convolution (NCHW), dispatched to the three kernels MobileNetV2 needs.

For input $x$ (N, Ci, H, W), weight $w$ (Co, Ci / groups, kh, kw), stride $s$,
zero padding $p$ and dilation $d$, the output $y$ (N, Co, Ho, Wo), with
$H_o = \lfloor (H + 2p_h - d_h (k_h - 1) - 1) / s_h \rfloor + 1$ (and the same for $W_o$), is

$$
y_{n,o,i,j} = \sum_{c,a,b} w_{o,c,a,b} \;
  \bar{x}_{n,\; g(o) C_i / \text{groups} + c,\; i s_h + a d_h,\; j s_w + b d_w}
$$

with $\bar{x}$ the padded input and $g(o)$ the group of output channel $o$ (a
cross-correlation, as in every deep-learning library). Dilation $d > 1$ is the *atrous*
convolution of DeepLab: the kernel's taps $d$ pixels apart, so a 3x3 filter sees a
$(2d + 1) \times (2d + 1)$ field for the same nine multiply-adds per output. Its backward
passes:

* $\partial L / \partial x$: each $x$ element fed every output whose window covered it, so
  its gradient is the sum of those outputs' gradients times the matching weight:
  a "full" correlation of $\partial L / \partial y$ with the flipped kernel (a transposed
  convolution).
* $\partial L / \partial w$: each weight multiplied the input under its tap for every
  output, so $\partial L / \partial w_{o,c,a,b} =
  \sum_{n,i,j} \partial L / \partial y_{n,o,i,j} \; \bar{x}_{n,c,\,i s_h + a d_h,\,j s_w + b d_w}$.

Three specialised kernel families (see [tinymbv2.kernels][]; the readable versions
are the methods of [ReferenceKernels][tinymbv2.kernels.reference.ReferenceKernels]):

* pointwise (1x1, stride 1, no padding, groups 1): a matrix product per image;
  most of MobileNetV2's multiply-adds (paper section 3.1);
* depthwise (groups == Ci == Co): one 3x3 filter per channel;
* dense (groups 1): the 3x3 stem.

Any other grouping runs the dense kernel once per group. A 1x1 kernel has no spacing
between taps to dilate: it stays pointwise whatever the dilation.
"""
from __future__ import annotations

from ..autograd import Function, Tensor
from ..backend import get_array_module
from ..kernels import kernels_for
from .checks import check_same_device, check_same_dtype, check_tensor, pair


class DenseConv2d(Function):
    """groups = 1, any kernel size: the 3x3 stem.

    readable: ``kernels/reference.py``, ``ReferenceKernels.conv2d_forward``,
    ``conv2d_backward_input``, ``conv2d_backward_weight``.
    """

    @staticmethod
    def forward(ctx, x, w, stride, padding, dilation):
        k = kernels_for(x)
        ctx.save_for_backward(x, w)
        ctx.kernels, ctx.stride, ctx.padding, ctx.dilation = k, stride, padding, dilation
        return k.conv2d_forward(x, w, stride, padding, dilation)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        k, s, p, d = ctx.kernels, ctx.stride, ctx.padding, ctx.dilation
        gx = k.conv2d_backward_input(g, w, x.shape, s, p, d) if ctx.needs_input_grad[0] else None
        gw = k.conv2d_backward_weight(g, x, w.shape, s, p, d) if ctx.needs_input_grad[1] else None
        return gx, gw, None, None, None


class DepthwiseConv2d(Function):
    """groups = channels: one kh x kw filter per channel (paper section 3.1).

    readable: ``kernels/reference.py``, ``ReferenceKernels.depthwise_conv2d_forward``,
    ``depthwise_conv2d_backward_input``, ``depthwise_conv2d_backward_weight``.
    """

    @staticmethod
    def forward(ctx, x, w, stride, padding, dilation):
        k = kernels_for(x)
        ctx.save_for_backward(x, w)
        ctx.kernels, ctx.stride, ctx.padding, ctx.dilation = k, stride, padding, dilation
        return k.depthwise_conv2d_forward(x, w, stride, padding, dilation)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        k, s, p, d = ctx.kernels, ctx.stride, ctx.padding, ctx.dilation
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = k.depthwise_conv2d_backward_input(g, w, x.shape, s, p, d)
        if ctx.needs_input_grad[1]:
            gw = k.depthwise_conv2d_backward_weight(g, x, w.shape, s, p, d)
        return gx, gw, None, None, None


class PointwiseConv2d(Function):
    """1x1, stride 1, no padding, groups 1: a matrix product over channels per pixel.

    readable: ``kernels/reference.py``, ``ReferenceKernels.pointwise_conv2d_forward``,
    ``pointwise_conv2d_backward_input``, ``pointwise_conv2d_backward_weight``, and
    ``pointwise_conv2d_backward`` (both gradients, which a fast set takes in one pass).
    """

    @staticmethod
    def forward(ctx, x, w):
        k = kernels_for(x)
        ctx.save_for_backward(x, w)
        ctx.kernels = k
        return k.pointwise_conv2d_forward(x, w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        k = ctx.kernels
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[1]:
            return k.pointwise_conv2d_backward(g, x, w)
        gx = k.pointwise_conv2d_backward_input(g, w) if ctx.needs_input_grad[0] else None
        gw = k.pointwise_conv2d_backward_weight(g, x) if ctx.needs_input_grad[1] else None
        return gx, gw


class GroupedConv2d(Function):
    """groups > 1 but not depthwise: the dense kernel on each group's channel slice.

    readable: ``kernels/reference.py``, ``ReferenceKernels.conv2d_forward``,
    ``conv2d_backward_input``, ``conv2d_backward_weight`` (once per group).
    """

    @staticmethod
    def forward(ctx, x, w, stride, padding, dilation, groups):
        k = kernels_for(x)
        xp = get_array_module(x)
        ctx.save_for_backward(x, w)
        ctx.kernels, ctx.stride, ctx.padding, ctx.groups = k, stride, padding, groups
        ctx.dilation = dilation
        ci, co = x.shape[1] // groups, w.shape[0] // groups
        outs = [
            k.conv2d_forward(x[:, g * ci:(g + 1) * ci], w[g * co:(g + 1) * co], stride, padding,
                             dilation)
            for g in range(groups)
        ]
        return xp.concatenate(outs, axis=1)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        k, s, p, d, groups = ctx.kernels, ctx.stride, ctx.padding, ctx.dilation, ctx.groups
        xp = get_array_module(x)
        ci, co = x.shape[1] // groups, w.shape[0] // groups
        gx = xp.empty_like(x) if ctx.needs_input_grad[0] else None
        gw = xp.empty_like(w) if ctx.needs_input_grad[1] else None
        for i in range(groups):
            xs, ws = slice(i * ci, (i + 1) * ci), slice(i * co, (i + 1) * co)
            gy = g[:, ws]
            if gx is not None:
                gx[:, xs] = k.conv2d_backward_input(gy, w[ws], x[:, xs].shape, s, p, d)
            if gw is not None:
                gw[ws] = k.conv2d_backward_weight(gy, x[:, xs], w[ws].shape, s, p, d)
        return gx, gw, None, None, None, None


def check_conv_args(x, weight, bias, stride, padding, groups, fn="conv2d", dilation=(1, 1)):
    """Raise an error naming ``fn`` unless the arguments make a valid convolution.

    Args:
        x: The input, a 4-d Tensor (N, Ci, H, W).
        weight: The weight, a 4-d Tensor (Co, Ci / groups, kh, kw).
        bias: A Tensor (Co,), or None.
        stride: (sh, sw), each >= 1.
        padding: (ph, pw), each >= 0.
        groups: A positive int dividing Ci and Co.
        fn: The op's name, for the errors.
        dilation: (dh, dw), each >= 1: the spacing of the kernel's taps.

    Raises:
        TypeError: A Tensor is missing, or dtypes differ.
        ValueError: A shape, stride, padding, dilation or group count that does not fit, a
            kernel (as dilation spreads it) larger than the padded input, or Tensors on
            different devices.
    """
    check_tensor(x, fn, "input", ndim=4)
    check_tensor(weight, fn, "weight", ndim=4)
    if bias is not None:
        check_tensor(bias, fn, "bias", ndim=1)
    check_same_dtype(fn, input=x, weight=weight, bias=bias)
    check_same_device(fn, input=x, weight=weight, bias=bias)
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{fn}: expected groups to be a positive int, got {groups!r}")
    if stride[0] < 1 or stride[1] < 1:
        raise ValueError(f"{fn}: expected stride >= 1, got {stride}")
    if padding[0] < 0 or padding[1] < 0:
        raise ValueError(f"{fn}: expected padding >= 0, got {padding}")
    if dilation[0] < 1 or dilation[1] < 1:
        raise ValueError(f"{fn}: expected dilation >= 1, got {dilation}")
    n, ci, h, wd = x.shape
    co, ci_per_group, kh, kw = weight.shape
    if ci % groups or co % groups:
        raise ValueError(
            f"{fn}: expected groups={groups} to divide both input channels ({ci}) "
            f"and output channels ({co})"
        )
    if ci_per_group * groups != ci:
        raise ValueError(
            f"{fn}: expected input with {ci_per_group * groups} channels "
            f"(weight {weight.shape} with groups={groups}), got {ci} channels in input {x.shape}"
        )
    if bias is not None and bias.shape[0] != co:
        raise ValueError(f"{fn}: expected bias of shape ({co},), got {bias.shape}")
    (ph, pw), (dh, dw) = padding, dilation
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # the input pixels one output reads
    if span_h > h + 2 * ph or span_w > wd + 2 * pw:
        spread = "" if (dh, dw) == (1, 1) else f", spread over {span_h}x{span_w} by dilation {dilation},"
        raise ValueError(
            f"{fn}: kernel {kh}x{kw}{spread} is larger than the padded input "
            f"{h + 2 * ph}x{wd + 2 * pw} (input {h}x{wd}, padding {padding})"
        )


def conv_dilation(dilation, kernel_size, fn="conv2d") -> tuple[int, int]:
    """The dilation pair a convolution runs with: 1 along an axis where the kernel has one tap.

    A 1-wide kernel has no gap between taps to widen, so its dilation changes nothing; taking
    it as 1 keeps a 1x1 convolution on the pointwise path (PyTorch gives the same numbers).

    Args:
        dilation: An int or an (h, w) pair.
        kernel_size: (kh, kw).
        fn: The op's name, for the errors.

    Returns:
        (dh, dw).

    Raises:
        TypeError: Neither an int nor a pair of ints.
        ValueError: A dilation below 1.
    """
    dh, dw = pair(dilation, "dilation", fn)
    if dh < 1 or dw < 1:
        raise ValueError(f"{fn}: expected dilation >= 1, got {(dh, dw)}")
    kh, kw = kernel_size
    return (dh if kh > 1 else 1, dw if kw > 1 else 1)


def conv_function(x, weight, stride, padding, dilation, groups):
    """Apply the convolution Function that fits: pointwise, depthwise, dense or grouped.

    Args:
        x: The input (N, Ci, H, W), checked.
        weight: (Co, Ci / groups, kh, kw).
        stride: (sh, sw).
        padding: (ph, pw).
        dilation: (dh, dw), from ``conv_dilation``.
        groups: The channel groups.

    Returns:
        The output (N, Co, Ho, Wo), without bias.
    """
    ci, co = x.shape[1], weight.shape[0]
    kh, kw = weight.shape[2:]
    if groups == 1 and (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return PointwiseConv2d.apply(x, weight)
    if groups == ci == co:
        return DepthwiseConv2d.apply(x, weight, stride, padding, dilation)
    if groups == 1:
        return DenseConv2d.apply(x, weight, stride, padding, dilation)
    return GroupedConv2d.apply(x, weight, stride, padding, dilation, groups)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    r"""2-D convolution, PyTorch's ``F.conv2d`` (see the module for the formula).

    Args:
        x: The input (N, Ci, H, W).
        weight: (Co, Ci / groups, kh, kw).
        bias: (Co,), or None.
        stride: An int or an (h, w) pair.
        padding: Zeros on each side: an int or an (h, w) pair.
        dilation: The spacing of the kernel's taps, an int or an (h, w) pair (1: side by
            side; d > 1: atrous, $H_o = \lfloor (H + 2p - d(k-1) - 1)/s \rfloor + 1$).
        groups: The channel groups; ``groups == Ci == Co`` is depthwise.

    Returns:
        The output (N, Co, Ho, Wo).

    Raises:
        TypeError: The arguments are not Tensors of one dtype.
        ValueError: They do not make a valid convolution
            ([check_conv_args][tinymbv2.functional.conv.check_conv_args]).
    """
    stride, padding = pair(stride, "stride", "conv2d"), pair(padding, "padding", "conv2d")
    check_tensor(weight, "conv2d", "weight", ndim=4)
    dilation = conv_dilation(dilation, weight.shape[2:])
    check_conv_args(x, weight, bias, stride, padding, groups, dilation=dilation)
    y = conv_function(x, weight, stride, padding, dilation, groups)
    if bias is not None:
        y = y + bias.reshape(1, weight.shape[0], 1, 1)
    return y
