"""The layers MobileNetV2 is built from, each a thin Module over one ``F`` op.

Shapes (NCHW):

    Conv2d             (N, Ci, H, W) -> (N, Co, (H + 2p - k) // s + 1, ...)
    BatchNorm2d        (N, C, H, W)  -> same
    ReLU6, ReLU        any           -> same
    Sigmoid            any           -> same
    AdaptiveAvgPool2d  (N, C, H, W)  -> (N, C, oh, ow)
    Flatten            (N, C, 1, 1)  -> (N, C)
    Upsample           (N, C, H, W)  -> (N, C, Ho, Wo)
    Dropout, Identity  any           -> same
    Linear             (..., in)     -> (..., out)

Every layer checks its input (a Tensor, the rank, the channels, the dtype of its
parameters) and raises an error that names the layer, what it expected and what
it got, before any arithmetic runs.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import functional as F
from ..autograd import Tensor
from . import init
from .module import Module, Parameter


def _pair(value, name, layer):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value), int(value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, numbers.Integral) for v in value)):
        return int(value[0]), int(value[1])
    raise TypeError(f"{layer}: expected {name} as an int or a pair of ints, got {value!r}")


def _positive_int(value, name, layer, minimum=1):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{layer}: expected {name} to be an int >= {minimum}, got {value!r}")
    return int(value)


def check_input(layer: Module, x, ndim: int | None, channels: int | None = None,
                axis: int = 1, layout: str = "") -> None:
    """Raise an error naming ``layer`` unless ``x`` is a Tensor of the right form.

    The input's dtype must be that of the layer's parameters.

    Args:
        layer: The layer that checks (its repr starts the message).
        x: The layer's input.
        ndim: The expected rank; None: any.
        channels: The expected size of axis ``axis``; None: any.
        axis: The channel axis.
        layout: How the expected shape is shown, e.g. ``"(N, 3, H, W)"``.

    Raises:
        TypeError: ``x`` is not a Tensor, or not of the parameters' dtype.
        ValueError: ``x`` has another rank or another number of channels.
    """
    def name():
        return repr(layer).split("\n")[0]  # built only for an error message

    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name()}: expected a tinymbv2 Tensor, got {type(x).__name__} "
            "(wrap arrays with tinymbv2.Tensor(x))"
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"{name()}: expected a {ndim}-d input {layout}, "
            f"got a {x.ndim}-d input of shape {x.shape}"
        )
    if channels is not None and (x.ndim == 0 or x.shape[axis] != channels):
        got = x.shape[axis] if x.ndim else "none"
        raise ValueError(
            f"{name()}: expected {channels} channels (input {layout}), got {got} "
            f"in an input of shape {x.shape}"
        )
    param = next((p for p in layer._parameters.values() if p is not None), None)
    if param is not None and x.dtype != param.dtype:
        raise TypeError(
            f"{name()}: expected {param.dtype} input like the layer's parameters, got "
            f"{x.dtype} (cast the input, or the model with .double()/.float())"
        )


class Conv2d(Module):
    r"""2-D convolution; ``groups == in_channels`` makes it depthwise (paper section 3.1).

    Shapes: input (N, in_channels, H, W), output (N, out_channels, Ho, Wo) with
    $H_o = \lfloor (H + 2p - d(k - 1) - 1) / s \rfloor + 1$ (the same for W; $d$ the
    dilation, 1 unless the convolution is atrous); weight
    (out_channels, in_channels / groups, kh, kw), bias (out_channels,) or None.
    Default init as PyTorch's: ``kaiming_uniform(a=sqrt(5))``, i.e.
    $U(-1/\sqrt{\text{fan_in}}, 1/\sqrt{\text{fan_in}})$, and the bias from the same range.

    Args:
        in_channels: Channels of the input, C_in.
        out_channels: Channels of the output, C_out.
        kernel_size: k, an int or a pair (kh, kw).
        stride: s, an int or a pair (sh, sw).
        padding: p, zeros added on each side: an int or a pair (ph, pw).
        dilation: d, the spacing of the kernel's taps: an int or a pair (dh, dw), >= 1
            (DeepLab's atrous convolution; 1 is the usual convolution).
        groups: Input and output channels are split into this many groups, each convolved
            on its own; it must divide both. ``groups == in_channels == out_channels`` is
            the depthwise convolution.
        bias: Whether the layer adds a learned bias.
        dtype: The parameters' dtype (float32 or float64).

    Raises:
        TypeError: A size is neither an int nor a pair of ints.
        ValueError: A size is out of range, or ``groups`` does not divide the channels.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, dtype=np.float32):
        super().__init__()
        layer = "Conv2d"
        self.in_channels = _positive_int(in_channels, "in_channels", layer)
        self.out_channels = _positive_int(out_channels, "out_channels", layer)
        self.kernel_size = _pair(kernel_size, "kernel_size", layer)
        self.stride = _pair(stride, "stride", layer)
        self.padding = _pair(padding, "padding", layer)
        self.dilation = _pair(dilation, "dilation", layer)
        self.groups = _positive_int(groups, "groups", layer)
        if (min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0
                or min(self.dilation) < 1):
            raise ValueError(
                f"{layer}: expected kernel_size >= 1, stride >= 1, padding >= 0 and "
                f"dilation >= 1, got kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}"
            )
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{layer}: expected groups={groups} to divide in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = Parameter(np.empty(shape, dtype=dtype))
        self.bias = Parameter(np.empty(self.out_channels, dtype=dtype)) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        """Draw the parameters again from the default initialisation (see the class).

        Args:
            generator: An ``np.random.Generator``; None: the package's global one
                ([tinymbv2.random.manual_seed][] seeds it).
        """
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        if self.bias is not None:
            fan_in, _ = init.fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound, generator=generator)

    def output_shape(self, shape):
        """The output shape for an input shape, without computing (used by the summary).

        Args:
            shape: The input shape (N, C, H, W).

        Returns:
            (N, out_channels, Ho, Wo).

        Raises:
            ValueError: The input, padded, is smaller than the kernel.
        """
        n, _, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        dh, dw = self.dilation
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # the input pixels an output reads
        ho, wo = (h + 2 * ph - span_h) // sh + 1, (w + 2 * pw - span_w) // sw + 1
        if ho < 1 or wo < 1:
            spread = "" if (dh, dw) == (1, 1) else f" (spread over {span_h}x{span_w} by dilation)"
            raise ValueError(
                f"{self!r}: input {h}x{w} is smaller than the kernel {kh}x{kw}{spread} "
                f"(padding {ph}, {pw})"
            )
        return (n, self.out_channels, ho, wo)

    def forward(self, x):
        self.check_input(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def check_input(self, x):
        """Raise an error naming this layer unless ``x`` fits it.

        ``x`` must be (N, in_channels, H, W), of the parameters' dtype and at least as large
        as the kernel (with the padding).

        Args:
            x: The input Tensor.

        Raises:
            TypeError: ``x`` is not a Tensor of the parameters' dtype.
            ValueError: ``x`` has another shape, or is smaller than the kernel.
        """
        check_input(self, x, 4, self.in_channels, layout=f"(N, {self.in_channels}, H, W)")
        self.output_shape(x.shape)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class BatchNorm2d(Module):
    r"""Per-channel batch normalisation over (N, H, W), PyTorch semantics.

    $$y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}\,\gamma + \beta$$

    Parameters ``weight`` ($\gamma$, init 1) and ``bias`` ($\beta$, init 0), shape (C,);
    buffers ``running_mean`` (0), ``running_var`` (1) and ``num_batches_tracked`` (an int64
    0-d array). Training mode normalises with the batch's mean and biased variance and
    moves the running statistics:
    ``running = (1 - momentum) * running + momentum * batch`` (with the unbiased variance);
    ``momentum=None`` uses the cumulative average, ``1 / num_batches_tracked``.
    Evaluation mode uses the running statistics.

    Args:
        num_features: C, the channels of the input (N, C, H, W).
        eps: $\epsilon$, added to the variance.
        momentum: How far one batch moves the running statistics, in [0, 1]; None: the
            cumulative average.
        affine: Whether the layer has the learned $\gamma$ and $\beta$.
        track_running_stats: Whether it keeps running statistics (False: batch statistics
            in evaluation mode too).
        dtype: The parameters' and buffers' dtype.

    Raises:
        ValueError: ``num_features < 1``, ``eps <= 0`` or ``momentum`` outside [0, 1].
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features", "BatchNorm2d")
        if not eps > 0:
            raise ValueError(f"BatchNorm2d: expected eps > 0, got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm2d: expected momentum in [0, 1] or None, got {momentum}")
        self.eps, self.momentum = float(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        c = self.num_features
        if affine:
            self.weight = Parameter(np.ones(c, dtype=dtype))
            self.bias = Parameter(np.zeros(c, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=dtype))
            self.register_buffer("running_var", np.ones(c, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_parameters(self, generator=None):
        r"""Reset: running mean 0, variance 1, no batch counted; $\gamma = 1$, $\beta = 0$.

        Args:
            generator: Not used (the reset is deterministic); taken so that every layer's
                ``reset_parameters`` is called alike.
        """
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x):
        self.check_input(x)
        momentum = self.count_batch()
        running_mean, running_var = self.running_stats()
        return F.batch_norm(x, running_mean, running_var, self.weight, self.bias,
                            training=self.training or running_mean is None,
                            momentum=momentum, eps=self.eps)

    def check_input(self, x):
        """Raise an error naming this layer unless ``x`` fits it.

        ``x`` must be (N, num_features, H, W), of the dtype of the parameters and of the
        running statistics.

        Args:
            x: The input Tensor.

        Raises:
            TypeError: ``x`` is not a Tensor of the layer's dtype.
            ValueError: ``x`` has another shape.
        """
        check_input(self, x, 4, self.num_features, layout=f"(N, {self.num_features}, H, W)")
        if self.running_mean is not None and self.running_mean.dtype != x.dtype:
            raise TypeError(
                f"{self!r}: expected {self.running_mean.dtype} input like its running "
                f"statistics, got {x.dtype} (cast the model with .double()/.float())"
            )

    def count_batch(self) -> float:
        """Count one batch and return the momentum its statistics move the running ones by.

        In training mode with tracked statistics, ``num_batches_tracked += 1``; the
        momentum is ``self.momentum``, or 1 / num_batches_tracked (a cumulative average)
        when it is None. Called once per forward, as PyTorch's BatchNorm does.
        """
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1  # in place: a 0-d int64 array
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked.data)
        return momentum

    def running_stats(self):
        """(running_mean, running_var) as arrays, or (None, None) when not tracked."""
        if not self.track_running_stats or self.running_mean is None:
            return None, None
        return self.running_mean.data, self.running_var.data

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class ReLU6(Module):
    """min(max(x, 0), 6): the paper's non-linearity (section 3.2), bounded for low precision."""

    def forward(self, x):
        return F.relu6(x)


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x):
        return F.relu(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x)): a gate in (0, 1) (LR-ASPP's pooled branch)."""

    def forward(self, x):
        return F.sigmoid(x)


class Identity(Module):
    """Returns its input unchanged (a placeholder, e.g. to remove a classifier)."""

    def forward(self, x):
        return x


class Linear(Module):
    r"""$y = x W^T + b$; weight (out_features, in_features), bias (out_features,).

    Shapes: (..., in_features) -> (..., out_features). Default init as PyTorch's:
    $W \sim U(-1/\sqrt{\text{in}}, 1/\sqrt{\text{in}})$ (``kaiming_uniform``, ``a=sqrt(5)``),
    $b \sim U(-1/\sqrt{\text{in}}, 1/\sqrt{\text{in}})$.

    Args:
        in_features: The size of the input's last axis.
        out_features: The size of the output's last axis.
        bias: Whether the layer adds a learned bias.
        dtype: The parameters' dtype.

    Raises:
        ValueError: A size is below 1.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features", "Linear")
        self.out_features = _positive_int(out_features, "out_features", "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty(self.out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        """Draw the parameters again from the default initialisation (see the class).

        Args:
            generator: An ``np.random.Generator``; None: the package's global one
                ([tinymbv2.random.manual_seed][] seeds it).
        """
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound, generator=generator)

    def forward(self, x):
        check_input(self, x, None, self.in_features, axis=-1, layout=f"(..., {self.in_features})")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Dropout(Module):
    """Inverted dropout in training mode; identity in evaluation mode.

    In training mode each element is zeroed with probability ``p`` and the survivors are
    scaled by ``1 / (1 - p)``, so the expected output equals the input.

    Args:
        p: The probability of dropping an element, in [0, 1].
        generator: An ``np.random.Generator`` for reproducible masks; None: the package's
            global one.

    Raises:
        ValueError: ``p`` is not a number in [0, 1].
    """

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: expected a probability p in [0, 1], got {p!r}")
        self.p = float(p)
        self.generator = generator

    def forward(self, x):
        check_input(self, x, None)
        return F.dropout(x, self.p, training=self.training, generator=self.generator)

    def extra_repr(self):
        return f"p={self.p}"


class AdaptiveAvgPool2d(Module):
    """(N, C, H, W) -> (N, C, oh, ow) by averaging; ``output_size=1`` is global pooling.

    Args:
        output_size: (oh, ow), an int or a pair.

    Raises:
        ValueError: A size is below 1.
    """

    def __init__(self, output_size=1):
        super().__init__()
        self.output_size = _pair(output_size, "output_size", "AdaptiveAvgPool2d")
        if min(self.output_size) < 1:
            raise ValueError(f"AdaptiveAvgPool2d: expected output_size >= 1, got {output_size!r}")

    def forward(self, x):
        check_input(self, x, 4, layout="(N, C, H, W)")
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Upsample(Module):
    """Resize (N, C, H, W) to a size or by a scale factor: ``torch.nn.Upsample``.

    A Module over [F.interpolate][tinymbv2.functional.resizing.interpolate], with
    PyTorch's default mode, ``"nearest"``; a segmentation head's ``"bilinear"`` is one
    argument away.

    Args:
        size: The output plane (Ho, Wo), or one int for both.
        scale_factor: Instead of ``size``: a number or a pair.
        mode: ``"nearest"`` or ``"bilinear"``.
        align_corners: Bilinear only (None: False).

    Raises:
        ValueError: A mode other than the two, or ``align_corners`` with ``"nearest"``.
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"Upsample: expected mode 'nearest' or 'bilinear', got {mode!r}")
        if mode == "nearest" and align_corners is not None:
            raise ValueError("Upsample: align_corners can only be set with mode 'bilinear', "
                             f"got align_corners={align_corners!r} with mode 'nearest'")
        self.size, self.scale_factor = size, scale_factor
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x):
        check_input(self, x, 4, layout="(N, C, H, W)")
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self):
        where = f"size={self.size!r}" if self.size is not None else f"scale_factor={self.scale_factor!r}"
        corners = "" if self.align_corners is None else f", align_corners={self.align_corners}"
        return f"{where}, mode={self.mode!r}{corners}"


class Flatten(Module):
    """Merge the axes from ``start_dim`` on into one: (N, C, 1, 1) -> (N, C) with ``start_dim=1``.

    Args:
        start_dim: The first axis merged.

    Raises:
        ValueError: ``start_dim`` is negative.
    """

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = _positive_int(start_dim, "start_dim", "Flatten", minimum=0)

    def forward(self, x):
        check_input(self, x, None)
        if x.ndim <= self.start_dim:
            raise ValueError(
                f"{self!r}: expected an input of rank > {self.start_dim}, got a {x.ndim}-d "
                f"input of shape {x.shape}"
            )
        return F.flatten(x, self.start_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}"
