"""Freezing: a trained MobileNetV2's inference as a fixed list of kernel calls, prepared once.

[fuse][tinymbv2.fusion.fuse] keeps the model's layers and decides at every call, from the
layers' state and the input, which fused op runs: each call walks the modules, checks the
pattern, wraps arrays in Tensors, goes through an autograd ``Function``, and the kernel
checks the weights again and turns each BatchNorm into per-channel scales. That is what
lets one model train, evaluate and be edited between calls. A deployed model is never
edited, and for one 224 px image that bookkeeping is a large part of the forward.

``freeze(model)`` does once what an inference runtime does when it loads a graph
(onnxruntime's session, ``torch.jit.freeze``): it reads the eval-mode model, copies its
weights and BatchNorm statistics (a snapshot: training the model afterwards does not change
the frozen one), and keeps the network as a list of steps on arrays:

    stem        y = ReLU6(BN(conv3x3(x)))        conv2d_bn_eval     } prepare_stem_block_eval:
    block 1     y = inverted_residual_eval(x)                       } one step
    blocks      y = inverted_residual_eval(x)    one prepared call each
    head        y = ReLU6(BN(conv1x1(x)))        pointwise_conv2d_bn_eval, prepared
    classifier  logits = mean_hw(y) @ W.T + b    global_average_pool, matmul (no dropout)

Each step is prepared for a kernel set the first time it runs on it
(``prepare_inverted_residual_eval``: the numba set checks the block's weights, lays them out
for its GEMMs and tabulates its BatchNorms there, once). The stem and the first block,
which has no expansion, are one step: the numba set computes the stem's rows inside the
block's pass, band by band, so that the network's largest map (32 x 112 x 112 an image at
224 px) is never written to memory and read back. The kernels and their operands are
those the fused model runs, so a frozen model's logits are the fused model's, bit for bit.

    frozen = tinymbv2.freeze(model.eval())
    logits = frozen(images)          # a NumPy array (N, num_classes)
"""
from __future__ import annotations

from .autograd import Tensor, no_grad
from .backend import get_array_module
from .functional.fused import conv_bn_eval_arrays
from .fusion import block_eval_parts, fuse
from .kernels import kernels_for
from .models.mobilenetv2 import Conv2dNormActivation, InvertedResidual, MobileNetV2
from .nn import BatchNorm2d, Conv2d, Dropout, Linear, ReLU6


def freeze(model: MobileNetV2) -> "FrozenNet":
    """A frozen copy of an eval-mode MobileNetV2 for inference (see the module).

    Args:
        model: A [MobileNetV2][tinymbv2.models.mobilenetv2.MobileNetV2] in eval mode, with
            the paper's blocks (linear bottlenecks, the residual between bottlenecks, ReLU6)
            and BatchNorms that keep running statistics.

    Returns:
        The [FrozenNet][tinymbv2.frozen.FrozenNet].

    Raises:
        TypeError: Not a MobileNetV2.
        ValueError: A module in training mode, or a layer the frozen steps do not cover
            (named in the message).
    """
    if not isinstance(model, MobileNetV2):
        raise TypeError(f"freeze: expected a MobileNetV2, got {type(model).__name__}")
    training = [name or "the model" for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(f"freeze: the model must be in eval mode (call model.eval()); "
                         f"{training[0]} is training")
    if model.shortcut == "expansion":
        raise ValueError("freeze: the shortcut between expansions (shortcut='expansion') has "
                         "no frozen step; freeze the paper's blocks")
    steps, names = [], []
    for i, layer in enumerate(model.features):
        name = f"features.{i}"
        if isinstance(layer, InvertedResidual):
            steps.append(_Block.of(layer, name))
        elif isinstance(layer, Conv2dNormActivation):
            steps.append(_ConvBN.of(layer, name))
        else:
            raise ValueError(f"freeze: {name} is a {type(layer).__name__}, not a conv-BN-ReLU6 "
                             "or an inverted residual block")
        names.append(name)
    if (len(steps) > 1 and isinstance(steps[0], _ConvBN) and steps[0].groups == 1
            and isinstance(steps[1], _Block) and steps[1].layers[0] is None
            and not steps[1].residual):
        steps[:2] = [_StemBlock(*steps[:2])]  # one pass: the stem's map never in memory
        names[:2] = ["features.0-1"]
    layers = list(model.classifier)
    if [type(m) for m in layers] != [Dropout, Linear]:
        raise ValueError("freeze: expected the classifier Dropout, Linear, got "
                         f"{[type(m).__name__ for m in layers]}")
    linear = layers[1]
    bias = None if linear.bias is None else _copy(linear.bias)
    return FrozenNet(steps, (_copy(linear.weight), bias), model.features[0][0].in_channels,
                     names)


class FrozenNet:
    """A MobileNetV2's inference as steps on arrays, its weights copied (see the module).

    Args:
        steps: The feature layers, each with ``prepare(kernels) -> run(x) -> y``.
        classifier: ``(weight (K, C), bias (K,) or None)`` of the Linear.
        in_channels: The image channels.
        names: Each step's name: the model's layer (``features.5``), or layers
            (``features.0-1``: the stem and block 1, one step). Default: ``step 0``, ...
    """

    def __init__(self, steps, classifier, in_channels: int, names=None):
        self.steps, self.classifier, self.in_channels = steps, classifier, in_channels
        self.names = list(names) if names is not None else [f"step {i}" for i in range(len(steps))]
        self.dtype = classifier[0].dtype
        self._runs = {}  # kernel set -> the steps prepared for it

    def prepared(self, kernels) -> list:
        """The steps as functions of arrays, prepared for a kernel set (once, then kept):
        ``features(x)`` is ``x = run(x)`` for each, in order (a profile can time them).

        Args:
            kernels: A kernel set (``tinymbv2.kernels.kernels_for(x)`` for the images x).

        Returns:
            One ``run(x) -> y`` per step, named by ``names``.
        """
        runs = self._runs.get(kernels)
        if runs is None:
            runs = self._runs[kernels] = [step.prepare(kernels) for step in self.steps]
        return runs

    def features(self, x):
        """The last feature map (N, C', H', W') of images x (N, in_channels, H, W).

        Args:
            x: The images, an array (or Tensor) of the model's dtype on its device.

        Returns:
            The map, an array.

        Raises:
            ValueError: x not an array on the weights' device, not 4-D or of other channels.
            TypeError: x of another dtype.
        """
        x = x.data if isinstance(x, Tensor) else x
        xp = get_array_module(self.classifier[0])
        if not isinstance(x, xp.ndarray) or x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"FrozenNet: expected images as a {xp.__name__} array (N, "
                             f"{self.in_channels}, H, W), got {type(x).__name__} "
                             f"{getattr(x, 'shape', '')}")
        if x.dtype != self.dtype:
            raise TypeError(f"FrozenNet: expected {self.dtype} images (the model's dtype), got "
                            f"{x.dtype}")
        for run in self.prepared(kernels_for(x)):
            x = run(x)
        return x

    def __call__(self, x):
        """The logits (N, num_classes) of images x (N, in_channels, H, W).

        ``features``, ``pool`` (global average pooling), then ``classify`` (the Linear).

        Args:
            x: The images, an array (or Tensor) of the model's dtype on its device.

        Returns:
            The logits, an array.
        """
        return self.classify(self.pool(self.features(x)))

    @staticmethod
    def pool(y):
        """Global average pooling of the last feature map: (N, C', H', W') -> (N, C').

        The kernel set's ``global_average_pool``: the bits of the model's
        ``y.mean(axis=(2, 3))``.

        Args:
            y: ``features``' map.

        Returns:
            The pooled features.
        """
        return kernels_for(y).global_average_pool(y)

    def classify(self, pooled):
        """The Linear on pooled features: ``pooled @ W.T + b`` (dropout does nothing for
        inference), the kernel set's ``matmul`` as the model's ``Linear`` runs it.

        Args:
            pooled: (N, C').

        Returns:
            The logits (N, num_classes).
        """
        weight, bias = self.classifier
        logits = kernels_for(pooled).matmul(pooled, weight.T)
        if bias is not None:
            logits += bias
        return logits


class _ConvBN:
    """A Conv2dNormActivation (Conv2d, BatchNorm2d, ReLU6), run on the kernel
    ``ConvBatchNormEval`` picks for the convolution's shape (``conv_bn_eval_arrays``); a
    pointwise one prepared."""

    def __init__(self, weight, stride, padding, groups, bn):
        self.weight, self.stride, self.padding, self.groups, self.bn = (weight, stride, padding,
                                                                        groups, bn)

    @classmethod
    def of(cls, layer, name):
        parts = list(layer)
        if [type(m) for m in parts] != [Conv2d, BatchNorm2d, ReLU6]:
            raise ValueError(f"freeze: expected {name} to be Conv2d, BatchNorm2d, ReLU6, got "
                             f"{[type(m).__name__ for m in parts]}")
        conv, norm, _ = parts
        if conv.bias is not None or conv.dilation != (1, 1) or conv.groups not in (
                1, conv.in_channels):
            raise ValueError(f"freeze: {name}'s convolution has a bias, a dilation or channel "
                             "groups that no fused kernel takes")
        return cls(_copy(conv.weight), conv.stride, conv.padding, conv.groups, _bn(norm, True, name))

    def prepare(self, kernels):
        w, stride, padding, groups, bn = (self.weight, self.stride, self.padding, self.groups,
                                          self.bn)
        if groups == 1 and w.shape[2:] == (1, 1) and stride == (1, 1) and padding == (0, 0):
            return kernels.prepare_pointwise_conv2d_bn_eval(w, bn)  # W laid out once
        return lambda x: conv_bn_eval_arrays(kernels, x, w, stride, padding, groups, bn)


class _StemBlock:
    """The stem and a first block without expansion or residual (MobileNetV2's), one step:
    ``prepare_stem_block_eval`` (the numba set makes the stem's rows inside the block's
    pass; the same bits as the two steps)."""

    def __init__(self, stem, block):
        self.stem, self.block = stem, block

    def prepare(self, kernels):
        s = self.stem
        return kernels.prepare_stem_block_eval(s.prepare(kernels), self.block.prepare(kernels),
                                               s.weight, s.stride, s.padding, s.bn)


class _Block:
    """An inverted residual block, as ``F.inverted_residual_eval`` runs it."""

    def __init__(self, expand, depthwise, project, stride, residual):
        self.layers, self.stride, self.residual = (expand, depthwise, project), stride, residual

    @classmethod
    def of(cls, block, name):
        mean = next(m for m in block.modules() if isinstance(m, BatchNorm2d)).running_stats()[0]
        if mean is None:
            raise ValueError(f"freeze: {name}'s BatchNorms keep no running statistics")
        with no_grad():  # asked with an empty batch of the block's input
            probe = Tensor(get_array_module(mean).empty((0, block.inp, 1, 1), mean.dtype))
            parts = block_eval_parts(fuse(block), probe)  # the fused view knows the pattern
        if parts is None:
            raise ValueError(f"freeze: {name} is not the paper's block (1x1 expansion, 3x3 "
                             "depthwise, linear 1x1 projection, each with an eval BatchNorm "
                             "and ReLU6) that the fused inference op runs")
        copied = [None if p is None else (_copy(p[0]), tuple(_copy(a) for a in p[1][:4])
                                          + tuple(p[1][4:])) for p in parts]
        return cls(*copied, block.stride, bool(block.use_res_connect))

    def prepare(self, kernels):
        return kernels.prepare_inverted_residual_eval(*self.layers, self.stride, self.residual)


def _bn(norm, relu6, name):
    """``(mean, var, weight, bias, eps, relu6)`` of an eval-mode BatchNorm2d, copied."""
    mean, var = norm.running_stats()
    if mean is None:
        raise ValueError(f"freeze: {name}'s BatchNorm keeps no running statistics")
    mean, var = _copy(mean), _copy(var)
    xp = get_array_module(mean)
    weight = _copy(norm.weight) if norm.affine else xp.ones_like(mean)
    bias = _copy(norm.bias) if norm.affine else xp.zeros_like(mean)
    return mean, var, weight, bias, norm.eps, relu6


def _copy(a):
    """An array's own copy (a Tensor's data)."""
    a = a.data if isinstance(a, Tensor) else a
    return a.copy()
