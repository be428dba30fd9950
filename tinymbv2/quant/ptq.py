r"""Post-training quantization, simulated in float: what int8 costs a network.

``quantize_model(model)`` returns a *quantized view* of a trained MobileNetV2 (the paper's
network, ``seed_article_net``, either activation), Mobile DeepLabv3 (any head) or SSDLite:
a new tree of modules in which

* every convolution has the BatchNorm after it folded in (``export.folding.fold_bn``: the
  weights the deployed network really has) and its weight fake-quantized to int8, symmetric,
  per output channel (or per tensor), as ``QuantConv2d`` (a head's conv with no BatchNorm
  too, with its own bias); the classifier's Linear likewise (``QuantLinear``); the biases
  stay float (the int8 kernels keep them as int32, whose step $s_x s_w$ is far finer than
  the outputs');
* every activation a deployed int8 network stores is fake-quantized to uint8 by an
  ``ActQuant``: the input image, each ReLU6's output, each projection's output and each
  residual sum. A ReLU6's range is known, $[0, 6]$, so its scale is $6 / 255$ with no
  calibration (the paper's reason for ReLU6, section 3.2); with ``relu6_range=False``, or
  after a ReLU, it is observed like the others. A Sigmoid's (LR-ASPP's gate) is $[0, 1]$.
* the segmenter's and the detector's float parts stay float: pooling, concatenation,
  bilinear upsampling, LR-ASPP's product of its branches, and the logits and box offsets.

``calibrate(qnet, images)`` runs calibration images through the view with every observed
``ActQuant`` recording its tensor's range (``observers``: min/max, percentile or MSE), then
fixes their scales and zero points and switches fake quantization on. The view then computes,
in float, the values an int8 network computes with integers; training it is
quantization-aware training (the fake quantization's straight-through gradient reaches the
folded weights; the activations' scales stay those of calibration).

The model itself is not changed: the view holds new Parameters (the folded weights) and
shares nothing that training the view would move.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..autograd import Tensor, no_grad
from ..export.folding import fold_bn, host
from ..fusion import FusedSequential
from ..models.deeplabv3 import ASPP, DeepLabV3, LRASPPHead
from ..models.mobilenetv2 import ExpansionShortcuts, InvertedResidual, MobileNetV2
from ..models.ssdlite import SSDLite, SSDLiteBackbone, SSDLiteHead, SSDLiteScoringHead
from .fake_quant import fake_quantize
from .observers import MinMaxObserver, MSEObserver, PercentileObserver
from .qparams import choose_qparams, quant_range

OBSERVERS = {"minmax": MinMaxObserver, "percentile": PercentileObserver, "mse": MSEObserver}
WEIGHT_SCHEMES = ("per_channel", "per_tensor")
RELU6_RANGE = (0.0, 6.0)
SIGMOID_RANGE = (0.0, 1.0)
QUANTIZABLE = (MobileNetV2, DeepLabV3, SSDLite)
# modules whose own layers are converted one by one, their forward kept
COMPOSITES = QUANTIZABLE + (ASPP, LRASPPHead, SSDLiteBackbone, SSDLiteHead, SSDLiteScoringHead)
# layers that compute the same in the int8 network's float parts: kept as they are
FLOAT_LAYERS = (nn.Dropout, nn.AdaptiveAvgPool2d, nn.Identity, nn.Flatten)
# what the evaluation of a segmenter or a detector reads off its model, given by the view too
TASK_ATTRIBUTES = ("num_classes", "output_stride", "head", "size", "aspect_ratios", "min_ratio",
                   "max_ratio", "feature_map_sizes")


def weight_qparams(w: np.ndarray, scheme: str):
    """Symmetric int8 scale and zero point of a weight, per output channel or per tensor.

    Args:
        w: The weight, output channels first.
        scheme: ``"per_channel"`` or ``"per_tensor"``.

    Returns:
        ``(scale, zero_point, axis)``: (Co,) arrays and 0 per channel; numbers and None per
        tensor.
    """
    if scheme == "per_channel":
        rows = w.reshape(w.shape[0], -1)
        scale, zero = choose_qparams(rows.min(axis=1), rows.max(axis=1), "int8", symmetric=True)
        return scale, zero, 0
    scale, zero = choose_qparams(w.min(), w.max(), "int8", symmetric=True)
    return scale, zero, None


def quantized_weight(layer):
    """A ``QuantConv2d``'s or ``QuantLinear``'s weight as the int8 network holds it:
    fake-quantized with this moment's scales (they follow the weight as training moves it),
    or the weight itself when the layer's ``quantize`` is off.

    Args:
        layer: The layer.

    Returns:
        A Tensor of the weight's shape.
    """
    if not layer.quantize:
        return layer.weight
    scale, zero, axis = weight_qparams(np.asarray(layer.weight.data), layer.scheme)
    return fake_quantize(layer.weight, scale, zero, -128, 127, axis=axis)


class QuantConv2d(nn.Module):
    """A convolution with its BatchNorm folded in and its weight fake-quantized to int8.

    (N, Ci, H, W) -> (N, Co, Ho, Wo), as the convolution it replaces.

    Args:
        conv: The Conv2d.
        bn: The BatchNorm2d after it (eval statistics are folded in), or None (a head's
            conv with no BatchNorm: its weight and bias as they are).
        scheme: ``"per_channel"`` or ``"per_tensor"`` weight scales.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, scheme: str = "per_channel"):
        super().__init__()
        if bn is None:   # a conv with no BatchNorm after it: its own weight and bias
            weight = np.array(host(conv.weight))
            bias = None if conv.bias is None else np.array(host(conv.bias))
        elif bn.running_mean is None:
            raise ValueError(f"quantize_model: the BatchNorm after {conv!r} has no running "
                             f"statistics to fold")
        else:
            weight, bias = fold_bn(host(conv.weight), host(conv.bias), host(bn.running_mean),
                                   host(bn.running_var), host(bn.weight), host(bn.bias), bn.eps)
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.stride, self.padding, self.dilation, self.groups = (conv.stride, conv.padding,
                                                                 conv.dilation, conv.groups)
        self.scheme, self.quantize = scheme, True

    def forward(self, x):
        return F.conv2d(x, quantized_weight(self), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, stride={self.stride}, groups={self.groups}, {self.scheme}"


class QuantLinear(nn.Module):
    """A Linear with its weight fake-quantized to int8 (per output feature or per tensor).

    Args:
        linear: The Linear.
        scheme: ``"per_channel"`` or ``"per_tensor"``.
    """

    def __init__(self, linear: nn.Linear, scheme: str = "per_channel"):
        super().__init__()
        self.weight = nn.Parameter(np.array(host(linear.weight)))
        self.bias = None if linear.bias is None else nn.Parameter(np.array(host(linear.bias)))
        self.scheme, self.quantize = scheme, True

    def forward(self, x):
        return F.linear(x, quantized_weight(self), self.bias)


class ActQuant(nn.Module):
    """An activation as the int8 network stores it: uint8, affine, one scale per tensor.

    ``mode``: ``"observe"`` (calibration: the observer records the tensor, which passes
    unchanged), ``"quantize"`` (fake quantization with the scale and zero point fixed by
    ``freeze``) or ``"off"`` (the float network).

    Args:
        observer: The observer that finds the range, or None for a known range.
        fixed_range: ``(a, b)``, the known range (a ReLU6's $[0, 6]$), or None.
    """

    def __init__(self, observer=None, fixed_range=None):
        super().__init__()
        if (observer is None) == (fixed_range is None):
            raise ValueError("ActQuant: expected an observer or a fixed range, exactly one")
        self.observer, self.fixed_range = observer, fixed_range
        self.scale = self.zero_point = None
        self.mode = "observe" if fixed_range is None else "quantize"
        if fixed_range is not None:
            self.scale, self.zero_point = choose_qparams(*fixed_range, "uint8", symmetric=False)

    def freeze(self):
        """Fix the scale and zero point from what the observer saw; quantize from now on."""
        if self.observer is not None:
            self.scale, self.zero_point = self.observer.qparams()
        self.mode = "quantize"

    def forward(self, x):
        if self.mode == "observe" and self.observer is not None:
            self.observer(x.data)
            return x
        if self.mode == "quantize" and self.scale is not None:
            return fake_quantize(x, self.scale, self.zero_point, *quant_range("uint8"))
        return x

    def extra_repr(self):
        what = f"fixed {self.fixed_range}" if self.fixed_range else type(self.observer).__name__
        return f"{what}, {self.mode}"


class QuantInvertedResidual(nn.Module):
    """An inverted residual block of the quantized view: its layers converted, the residual
    sum quantized (an int8 add writes an int8 tensor).

    Args:
        block: The InvertedResidual.
        convert: The function that converts its ``conv`` Sequential.
        make_quant: A function returning a new observed ``ActQuant``.
    """

    def __init__(self, block: InvertedResidual, convert, make_quant):
        super().__init__()
        self.conv = convert(block.conv)
        self.use_res_connect = block.use_res_connect
        self.out_quant = make_quant() if self.use_res_connect else None

    def forward(self, x):
        if self.use_res_connect:
            return self.out_quant(x + self.conv(x))
        return self.conv(x)


class QuantizedNet(nn.Module):
    """The quantized view: the input quantized, then the converted network.

    A view of a segmenter or a detector carries its model's ``num_classes`` (and the
    default boxes' layout, ``feature_map_sizes``...), so that ``evaluate_segmenter`` and
    ``evaluate_detector`` take it as they take the model (with ``fuse=False``).

    Args:
        body: The converted model.
        input_quant: The input's ``ActQuant``.
    """

    def __init__(self, body: nn.Module, input_quant: ActQuant):
        super().__init__()
        self.input_quant, self.body = input_quant, body
        for name in TASK_ATTRIBUTES:
            if hasattr(body, name):
                setattr(self, name, getattr(body, name))

    def act_quants(self):
        """Every ``ActQuant`` of the view, in forward order."""
        return [m for m in self.modules() if isinstance(m, ActQuant)]

    def set_quantize(self, on: bool):
        """Fake quantization on (after calibration) or off (the folded float network).

        Args:
            on: Quantize weights and activations.
        """
        for m in self.modules():
            if isinstance(m, (QuantConv2d, QuantLinear)):
                m.quantize = on
            elif isinstance(m, ActQuant):
                m.mode = "quantize" if on and m.scale is not None else "off"

    def forward(self, x):
        return self.body(self.input_quant(x))


def quantize_model(model, weights: str = "per_channel", observer: str = "minmax",
                   relu6_range: bool = True, **observer_args) -> QuantizedNet:
    """The quantized view of a trained network (see the module), ready to calibrate.

    The classifier, the segmenter and the detector are converted by the same rules, layer
    by layer: a conv and the BatchNorm after it become one ``QuantConv2d`` (a conv with no
    BatchNorm, a head's last 1x1 with its bias, a ``QuantConv2d`` of its own weights); a
    Linear a ``QuantLinear``; an ``ActQuant`` follows every ReLU6 ($[0, 6]$), ReLU
    (observed), Sigmoid ($[0, 1]$, known as ReLU6's), projection (a conv-BN with no
    activation) and residual sum. The rest of each network runs in float on those
    quantized tensors: pooling, concatenation, the bilinear upsampling, LR-ASPP's product
    of its two branches, and the logits and box offsets, which leave the network as float.

    Args:
        model: A MobileNetV2 (``mobilenet_v2`` or ``seed_article_net``, ReLU6 or ReLU), a
            ``DeepLabV3`` (``deeplabv3_mobilenet_v2``, any head) or an ``SSDLite``.
        weights: ``"per_channel"`` or ``"per_tensor"`` int8 weight scales.
        observer: ``"minmax"``, ``"percentile"`` or ``"mse"``: how the activations' ranges
            are found.
        relu6_range: Take a ReLU6's output range as $[0, 6]$ (else observe it).
        **observer_args: Passed to the observer (e.g. ``percentile=99.99``).

    Returns:
        The [QuantizedNet][tinymbv2.quant.ptq.QuantizedNet], in eval mode.

    Raises:
        ValueError: An unknown scheme or observer.
        TypeError: A model or a layer that has no quantized form here (the
            expansion-shortcut ablation, a fused view, a model of another kind).
    """
    if weights not in WEIGHT_SCHEMES:
        raise ValueError(f"quantize_model: expected weights in {WEIGHT_SCHEMES}, got {weights!r}")
    if observer not in OBSERVERS:
        raise ValueError(f"quantize_model: expected observer in {tuple(OBSERVERS)}, got "
                         f"{observer!r}")
    if type(model) not in QUANTIZABLE:
        raise TypeError(f"quantize_model: expected a MobileNetV2 classifier, a DeepLabV3 or an "
                        f"SSDLite, got {type(model).__name__}")
    if any(isinstance(m, FusedSequential) for m in model.modules()):
        raise TypeError("quantize_model: got a fused view (tinymbv2.fuse); quantize the plain "
                        "model, not a fused view")
    if any(isinstance(m, ExpansionShortcuts) for m in model.modules()):
        raise TypeError("quantize_model: no quantized form for the expansion-shortcut ablation "
                        "(ExpansionShortcuts)")

    def make_quant():
        return ActQuant(OBSERVERS[observer](dtype="uint8", symmetric=False, **observer_args))

    def convert_layers(layers):
        """A Sequential's layers, converted (a conv and its BatchNorm become one layer)."""
        out, i = [], 0
        while i < len(layers):
            layer = layers[i]
            if type(layer) is nn.Conv2d and i + 1 < len(layers) and type(layers[i + 1]) is nn.BatchNorm2d:
                out.append(QuantConv2d(layer, layers[i + 1], weights))
                i += 2
                if i == len(layers) or type(layers[i]) not in (nn.ReLU6, nn.ReLU):
                    out.append(make_quant())  # a projection's output: stored as int8 too
                continue
            if type(layer) is nn.ReLU6:
                out += [layer, ActQuant(fixed_range=RELU6_RANGE) if relu6_range else make_quant()]
            elif type(layer) is nn.ReLU:
                out += [layer, make_quant()]
            elif type(layer) is nn.Sigmoid:
                out += [layer, ActQuant(fixed_range=SIGMOID_RANGE)]
            else:
                out.append(convert(layer))
            i += 1
        return out

    def convert(module):
        """``module``'s quantized form: a new module, ``module`` itself left as it was."""
        kind = type(module)
        if kind is InvertedResidual:
            return QuantInvertedResidual(module, convert, make_quant)
        if kind is nn.Conv2d:
            return QuantConv2d(module, None, weights)   # no BatchNorm after it: a head's conv
        if kind is nn.Linear:
            return QuantLinear(module, weights)
        if kind in FLOAT_LAYERS:
            return module
        if isinstance(module, nn.Sequential):
            layers = convert_layers(list(module))
            if kind.forward is nn.Sequential.forward:   # nothing but the chain: a Sequential
                return nn.Sequential(*layers)
            # a forward of its own (IntermediateLayers, ASPPPooling, ModuleList): the same
            # class, its layers replaced; the names kept where the layers map one to one
            names = list(module._modules)
            if len(layers) != len(names):
                names = [str(k) for k in range(len(layers))]
            copy = module.shallow_copy()
            copy.__dict__["_modules"] = dict(zip(names, layers))
            return copy
        if kind in COMPOSITES:
            copy = module.shallow_copy()
            for name, child in module.named_children():
                setattr(copy, name, convert(child))
            return copy
        raise TypeError(f"quantize_model: no quantized form for a {kind.__name__} layer")

    qnet = QuantizedNet(convert(model), make_quant())
    qnet.eval()
    return qnet


def calibrate(qnet: QuantizedNet, images, batch_size: int = 64) -> QuantizedNet:
    """Run calibration images through the view, then fix every activation's scale.

    Args:
        qnet: A view from ``quantize_model``.
        images: (N, C, H, W) images, normalised as the model takes them.
        batch_size: The images per forward pass.

    Returns:
        ``qnet``, its ``ActQuant`` s frozen: fake quantization on.

    Raises:
        ValueError: No images.
    """
    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError("calibrate: expected at least one calibration image, got none")
    qnet.eval()
    qnet.set_quantize(False)
    for m in qnet.act_quants():
        if m.observer is not None:
            m.mode = "observe"
    dtype = next(iter(qnet.parameters())).dtype
    with no_grad():
        for start in range(0, len(images), batch_size):
            qnet(Tensor(images[start:start + batch_size].astype(dtype)))
    for m in qnet.act_quants():
        m.freeze()
    qnet.set_quantize(True)
    return qnet
