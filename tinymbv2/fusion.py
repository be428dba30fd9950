"""Fusion: a pass that rewrites a model so that the layer patterns it recognises run as fused ops.

tinymbv2's models are written layer by layer, as the paper and torchvision write them:
stepping into ``model(x)`` follows a batch through every convolution, BatchNorm and
ReLU6. Run that way, each layer reads its input from memory and writes its output back,
and most of a MobileNetV2 step is spent on that traffic, not on arithmetic. A
framework's compiler (``torch.compile``, XLA, TensorRT) looks at the network as a graph
and fuses runs of layers into single kernels. [fuse][tinymbv2.fusion.fuse] does the
same, by hand and in the open: it returns a *fused view* of a model, a new tree of
containers over the very same layers, whose containers run the patterns below as one op
each.

| pattern (layers as built, of exactly these types) | when | runs as |
|---|---|---|
| Conv2d -> BatchNorm2d (-> ReLU6) | inference | ``F.conv2d_batch_norm_eval`` |
| Conv2d -> BatchNorm2d -> ReLU6 | otherwise | conv, then ``F.batch_norm_relu6`` |
| Conv2d -> BatchNorm2d -> ReLU | otherwise | conv, then ``F.batch_norm_relu`` |
| BN, ReLU6 -> depthwise 3x3 -> BN, ReLU6 (a) | training | conv, then ``F.depthwise_stage_train`` |
| a whole inverted residual block | inference | ``F.inverted_residual_eval`` |

(a) The BN of a conv-BN-ReLU6 and the next depthwise layer (dilated or not), inside a block
or from the stem into block 1.

The segmentation heads (``models/deeplabv3.py``) follow their BatchNorms with a plain
ReLU: for inference that is the conv-BN op and then the ReLU; in training the BN and the
ReLU run as one op, the kernels of ``batch_norm_relu6`` with the clamp's upper bound at
infinity.

"Inference" means no graph is recorded (``tinymbv2.no_grad()``) and the BatchNorms are
in eval mode with running statistics of the input's dtype; "training" means the
BatchNorms are in training mode with affine parameters. Anything else runs layer by
layer, as in the plain model, and so does every layer a user swapped in (a subclass of
``Conv2d``, a different activation...): the patterns match exact types only.
A dilated (atrous) convolution fuses with its BatchNorm for inference, where the fused op
takes the dilation, and a dilated depthwise 3x3 filter (padding equal to the dilation, stride
1) joins its depthwise stage in training; the whole-block inference op is written for the
undilated filter, so a dilated block runs layer by layer for inference.

The view shares every Parameter and buffer object with the model (the same
``state_dict`` keys and values): an optimizer built on either trains both, and the
running statistics move in both. The original model stays plain. A fused and an
unfused model agree to float rounding (tests/test_fusion.py, float64, train and eval
mode): with the reference kernels, whose fused kernels are compositions of the simple
ones, bit for bit; with the numba kernels to 1e-12 relative for the logits, the running
statistics and the gradient with respect to all the parameters, and to 1e-10 for each
parameter's own gradient (the gradients of BatchNorm scales are sums that cancel to
about 1e-4 of their terms, so a different summation order shows at a few 1e-12).
"""
from __future__ import annotations

from . import functional as F
from .autograd import Tensor, is_grad_enabled
from .backend import get_array_module
from .models.deeplabv3 import ConvNormReLU, DeepLabHead, IntermediateLayers
from .models.mobilenetv2 import Conv2dNormActivation, InvertedResidual
from .nn import BatchNorm2d, Conv2d, Module, ReLU, ReLU6, Sequential


def fuse(model: Module) -> Module:
    """A fused view of ``model``: the same layers, with recognised patterns run as fused ops.

    Containers are copied (a ``Sequential`` becomes a
    [FusedSequential][tinymbv2.fusion.FusedSequential], a block a
    [FusedInvertedResidual][tinymbv2.fusion.FusedInvertedResidual], any other container
    keeps its class and forward); layers with no children (Conv2d, BatchNorm2d, Linear, ...)
    are the model's own objects.

    Args:
        model: The model, left as it was.

    Returns:
        The view.
    """
    if not isinstance(model, Module):
        raise TypeError(f"fuse: expected a tinymbv2 Module, got {type(model).__name__}")
    children = list(model.named_children())
    if not children or isinstance(model, (FusedSequential, FusedInvertedResidual)):
        return model
    view = model.shallow_copy(_FUSED_CLASS.get(type(model), type(model)))
    for name, child in children:
        setattr(view, name, fuse(child))  # the copy's own registry: the model keeps its child
    return view


class FusedSequential(Sequential):
    """A Sequential that runs the recognised runs of its layers as fused ops (see the module).

    A slice of it is fused too. The view is made of the model's structure at the time
    of ``fuse``: fuse again after replacing a layer of the model.
    """

    def forward(self, x):
        return run_layers(list(self), x)

    def __getitem__(self, idx):
        item = super().__getitem__(idx)
        return fuse(item) if isinstance(idx, slice) else item


class FusedConvNormActivation(FusedSequential, Conv2dNormActivation):
    """A Conv2dNormActivation whose conv, BatchNorm and ReLU6 run fused: as one op for
    inference, as the conv and then ``F.batch_norm_relu6`` otherwise."""


class FusedConvNormReLU(FusedSequential, ConvNormReLU):
    """A segmentation head's conv-BN-ReLU whose BatchNorm and ReLU run fused in training
    (``conv_norm_relu``)."""


class FusedDeepLabHead(FusedSequential, DeepLabHead):
    """torchvision's DeepLabv3 head, its 3x3 conv-BN-ReLU run by ``conv_norm_relu``."""


class FusedInvertedResidual(InvertedResidual):
    """An inverted residual block that runs as one op for inference.

    In training its depthwise stage runs as one op (its ``conv`` is a
    [FusedSequential][tinymbv2.fusion.FusedSequential]).
    """

    def forward(self, x):
        parts = block_eval_parts(self, x)
        if parts is not None:
            return F.inverted_residual_eval(x, *parts, self.stride, self.use_res_connect)
        return super().forward(x)


class FusedIntermediateLayers(IntermediateLayers):
    """A segmentation backbone whose layers run fused between the maps it returns.

    The layers up to each returned map are one run (``run_layers``), so the stem's
    conv-BN-ReLU6 and block 1's depthwise layer still fuse into a stage.
    """

    def forward(self, x):
        out, run = {}, []
        for name, layer in self.named_children():
            run.append(layer)
            if name in self.return_layers:
                x, run = run_layers(run, x), []
                out[self.return_layers[name]] = x
        return out


_FUSED_CLASS = {
    Sequential: FusedSequential,
    IntermediateLayers: FusedIntermediateLayers,
    Conv2dNormActivation: FusedConvNormActivation,
    ConvNormReLU: FusedConvNormReLU,
    DeepLabHead: FusedDeepLabHead,
    InvertedResidual: FusedInvertedResidual,
}


# --------------------------------------------------------------- running a run of layers
def run_layers(layers: list, x):
    """Apply ``layers`` one after another to ``x``, with each recognised pattern fused.

    Args:
        layers: The layers, in order (a Sequential's children).
        x: The input Tensor.

    Returns:
        The output of the last layer.
    """
    i = 0
    while i < len(layers):
        if _is_conv_norm_relu6(layers[i]) and i + 1 < len(layers):
            target = _stage_target(layers[i + 1])
            if target is not None:  # conv-BN-ReLU6 then a depthwise layer: a stage
                x = _stage(layers[i], target, layers[i + 1], x)
                i += 2
                continue
        span = _conv_norm_span(layers, i)
        if span == 2 and i + 2 < len(layers) and type(layers[i + 2]) is ReLU:
            x = conv_norm_relu(layers[i], layers[i + 1], layers[i + 2], x)
            i += 3
            continue
        if span:
            x = conv_norm(layers[i], layers[i + 1], x, relu6=span == 3)
            i += span
            continue
        x = layers[i](x)
        i += 1
    return x


def _conv_norm_span(layers, i) -> int:
    """3 for Conv2d, BatchNorm2d (of the conv's channels), ReLU6 at i; 2 for Conv2d,
    BatchNorm2d; else 0 (a BatchNorm of other channels runs alone and raises its error)."""
    if (i + 1 < len(layers) and type(layers[i]) is Conv2d
            and type(layers[i + 1]) is BatchNorm2d
            and layers[i + 1].num_features == layers[i].out_channels):
        return 3 if i + 2 < len(layers) and type(layers[i + 2]) is ReLU6 else 2
    return 0


def _is_conv_norm_relu6(layer) -> bool:
    """A fused Conv2dNormActivation holding exactly Conv2d, BatchNorm2d, ReLU6."""
    return (isinstance(layer, FusedSequential) and len(layer) == 3
            and _conv_norm_span(list(layer), 0) == 3)


def _stage_target(layer):
    """The depthwise conv-BN-ReLU6 that can follow a conv-BN-ReLU6 as one stage: ``layer``
    itself, or the first layer of a block without expansion and without residual (its
    input is the previous layer's output, which the stage never stores). Else None."""
    if isinstance(layer, FusedInvertedResidual):
        if layer.use_res_connect or len(layer.conv) != 3:
            return None
        layer = layer.conv[0]
    if _is_conv_norm_relu6(layer) and layer[0].groups > 1:
        return layer
    return None


# ------------------------------------------------------------ conv + BatchNorm (+ ReLU6)
def conv_norm(conv: Conv2d, norm: BatchNorm2d, x, relu6: bool):
    """``norm(conv(x))``, then ReLU6 if ``relu6``, fused.

    One kernel call for inference; else the convolution and then BatchNorm (and ReLU6) as
    one op.

    Args:
        conv: The [Conv2d][tinymbv2.nn.layers.Conv2d].
        norm: The [BatchNorm2d][tinymbv2.nn.layers.BatchNorm2d] after it.
        x: The input Tensor.
        relu6: Apply the ReLU6 that follows.

    Returns:
        The output Tensor.
    """
    if _eval_fusable(conv, norm, x):
        conv.check_input(x)
        mean, var, weight, bias, eps = _eval_stats(norm, x)
        return F.conv2d_batch_norm_eval(x, conv.weight, conv.stride, conv.padding, conv.groups,
                                        mean, var, weight, bias, eps, relu6,
                                        dilation=conv.dilation)
    y = conv(x)
    if not relu6:
        return norm(y)
    running_mean, running_var, weight, bias, momentum, eps = _norm_args(norm, y)
    return F.batch_norm_relu6(y, running_mean, running_var, weight, bias,
                              training=norm.training or running_mean is None,
                              momentum=momentum, eps=eps)


def conv_norm_relu(conv: Conv2d, norm: BatchNorm2d, relu: ReLU, x):
    """``relu(norm(conv(x)))``, fused: the segmentation heads' unit.

    For inference the conv and BatchNorm as one op (``conv_norm``), then the ReLU; else the
    convolution, then BatchNorm and ReLU as one op (``F.batch_norm_relu``).

    Args:
        conv: The [Conv2d][tinymbv2.nn.layers.Conv2d].
        norm: The [BatchNorm2d][tinymbv2.nn.layers.BatchNorm2d] after it.
        relu: The [ReLU][tinymbv2.nn.layers.ReLU] after that.
        x: The input Tensor.

    Returns:
        The output Tensor.
    """
    if _eval_fusable(conv, norm, x):
        return relu(conv_norm(conv, norm, x, relu6=False))
    y = conv(x)
    running_mean, running_var, weight, bias, momentum, eps = _norm_args(norm, y)
    return F.batch_norm_relu(y, running_mean, running_var, weight, bias,
                             training=norm.training or running_mean is None,
                             momentum=momentum, eps=eps)


def _norm_args(norm, x):
    """(running_mean, running_var, weight, bias, momentum, eps) of a BatchNorm2d, as the
    fused ops take them, for an input x of its channels and dtype: checked, and the batch
    counted, as the layer's own forward does."""
    norm.check_input(x)
    momentum = norm.count_batch()
    running_mean, running_var = norm.running_stats()
    return running_mean, running_var, norm.weight, norm.bias, momentum, norm.eps


def _eval_fusable(conv, norm, x) -> bool:
    """Inference with this BatchNorm's running statistics: no graph recorded, BatchNorm
    in eval mode with statistics of x's dtype, a conv without bias."""
    return (not is_grad_enabled() and isinstance(x, Tensor) and not norm.training
            and conv.bias is None and norm.running_stats()[0] is not None
            and norm.running_mean.dtype == x.dtype)


def _eval_stats(norm, x):
    """(mean, var, weight, bias, eps) of an eval-mode BatchNorm, weight and bias Tensors
    (ones and zeros when it has no affine parameters)."""
    mean, var = norm.running_stats()
    if norm.affine:
        return mean, var, norm.weight, norm.bias, norm.eps
    xp = get_array_module(x.data)
    return (mean, var, Tensor(xp.ones(norm.num_features, x.dtype)),
            Tensor(xp.zeros(norm.num_features, x.dtype)), norm.eps)


# ------------------------------------------------- the depthwise stage, in training
def _stage(first, depthwise, after, x):
    """``after(first(x))`` where ``first`` is a conv-BN-ReLU6 and ``depthwise`` the
    depthwise conv-BN-ReLU6 that ``after`` starts with (``after`` is ``depthwise`` itself,
    or a block without expansion): in training, first's conv, then its BN + ReLU6, the
    depthwise filter and its BN + ReLU6 as one op, then the rest of ``after``."""
    conv1, norm1, _ = first
    conv2, norm2, _ = depthwise
    if not _stage_applies(conv1, norm1, conv2, norm2):
        return after(first(x))
    e = conv1(x)
    h = F.depthwise_stage_train(e, _norm_args(norm1, e), conv2.weight, conv2.stride[0],
                                _norm_args(norm2, e), dilation=conv2.dilation[0])
    if after is depthwise:
        return h
    return run_layers(list(after.conv)[1:], h)  # a block without expansion nor residual


def _stage_applies(conv1, norm1, conv2, norm2) -> bool:
    """Both BatchNorms in training mode with affine parameters, and conv2 the depthwise
    3x3 filter (no bias) over conv1's output channels: padding 1 at stride 1 or 2, or
    dilated at stride 1 with padding equal to the dilation (DeepLab's atrous blocks)."""
    hidden = conv1.out_channels
    (dh, dw), padding, stride = conv2.dilation, conv2.padding, conv2.stride
    undilated = (dh, dw) == (1, 1) and padding == (1, 1) and stride in ((1, 1), (2, 2))
    atrous = dh == dw > 1 and padding == (dh, dw) and stride == (1, 1)
    return (norm1.training and norm1.affine and norm2.training and norm2.affine
            and conv2.kernel_size == (3, 3) and (undilated or atrous)
            and conv2.bias is None
            and conv2.groups == conv2.in_channels == conv2.out_channels == hidden
            and norm1.num_features == norm2.num_features == hidden)


# ------------------------------------------------------ a whole block, for inference
def block_eval_parts(block, x):
    """A block's layers as ``F.inverted_residual_eval`` takes them, when it can run as one op.

    It can when x is a 4-D Tensor with ``block.inp`` channels, no graph is recorded, the
    layers are those the block was built with and every BatchNorm is eval-fusable
    (``tinymbv2.freeze`` asks with an empty batch).

    Args:
        block: An [InvertedResidual][tinymbv2.models.mobilenetv2.InvertedResidual].
        x: Its input.

    Returns:
        ``(expand, depthwise, project)``, each ``(weight, bn)`` with the model's Tensors
        (expand None without expansion); None when the block runs layer by layer.
    """
    if is_grad_enabled() or not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != block.inp:
        return None
    if block.bottleneck_activation is not None:  # Fig. 6a's ablation: the op ends linear
        return None
    layers = list(block.conv)
    if len(layers) not in (3, 4):  # not the layers the block was built with
        return None
    expand = layers[0] if len(layers) == 4 else None
    units = [] if expand is None else [(expand, (1, 1), 1, True)]
    units += [(layers[-3], (3, 3), block.stride, True)]
    if not all(_is_conv_norm_relu6(unit) for unit, _, _, _ in units) or _conv_norm_span(
            layers, len(layers) - 2) != 2:
        return None
    pairs = [(unit[0], unit[1], kernel, stride, relu6) for unit, kernel, stride, relu6 in units]
    pairs.append((layers[-2], layers[-1], (1, 1), 1, False))
    parts = []
    for conv, norm, kernel, stride, relu6 in pairs:
        depthwise = kernel == (3, 3)
        if (not _eval_fusable(conv, norm, x) or conv.kernel_size != kernel
                or conv.stride != (stride, stride) or conv.padding != (kernel[0] // 2,) * 2
                or conv.dilation != (1, 1)
                or conv.groups != (conv.in_channels if depthwise else 1)):
            return None
        parts.append((conv.weight, (*_eval_stats(norm, x), relu6)))
    return (None, *parts) if expand is None else tuple(parts)
