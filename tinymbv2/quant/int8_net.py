r"""The calibrated quantized view run in integers: the int8 network itself.

``Int8Net.from_view(qnet)`` takes a [QuantizedNet][tinymbv2.quant.ptq.QuantizedNet] after
``calibrate`` and stores what a deployed int8 MobileNetV2 holds: each convolution's weight
as int8 with one float32 scale per output channel (the folded weights, the very integers the
view's fake quantization and the QDQ file use), its float bias, and every activation's
uint8 scale and zero point. Running it:

* the image is quantized to uint8 with the input's scale (the kernel set's
  ``quantize_uint8``);
* each convolution is the kernel set's ``qlinear_conv2d`` (ONNX ``QLinearConv``, int8
  products summed in int32, requantized as onnxruntime does): its input's uint8 tensor, its
  int8 weight, its bias as int32 at the scale $s_x s_w$
  ($q_b = \text{round}(b / (s_x s_w))$), its output's scale and zero point, and ReLU6 as the
  clamp of the output integers (a ReLU's is the zero point: its outputs' range starts at 0);
  prepared once per layer (``prepare_qlinear_conv2d``, on its first call: the weights laid
  out for the kernel and the arguments checked once, each call checking only its input);
* a residual sum is ONNX's ``QLinearAdd``: both inputs dequantized, added, quantized to the
  sum's scale, in float32 (``qlinear_add``'s operations; given to the projection's prepared
  convolution, whose kernel may do it in its epilogue);
* an inverted residual block runs as one kernel where the kernel set has one
  (``prepare_qlinear_block`` of its prepared convolutions: the numba set's, on AVX-512
  VNNI, keeps the block's expanded tensor in the cache, band by band), the same integers
  as its layers one by one;
* the last feature map is dequantized and averaged over its pixels in one pass (the kernel
  set's ``dequantize_global_average_pool``: the integer sum of each plane, exact, then one
  float64 scaling rounded to float32), and the classifier is the float Linear on the
  dequantized int8 weights, the kernel set's ``matmul``: as the QDQ file leaves it (the
  pooled features are not quantized there). The logits are float32, rounded differently
  from the QDQ file's float ops in their last bits; the integers before them are the same.

The view computes the same in float (fake quantization); the integers here differ from it
only where a rounding lands differently (an int32 sum against a float sum, the bias rounded
to its int32 step). ``tests/quant`` compares both with onnxruntime.
"""
from __future__ import annotations

import io
import json

import numpy as np

from .. import nn
from ..atomic import write_atomically
from ..export.folding import host
from ..kernels import kernels_for
from ..models.mobilenetv2 import MobileNetV2
from .fake_quant import quantize_array
from .ptq import ActQuant, QuantConv2d, QuantInvertedResidual, QuantizedNet, QuantLinear, weight_qparams


class _Conv:
    """One int8 convolution with its output's quantization and activation."""

    GEOMETRY = ("stride", "padding", "dilation", "groups", "relu6")

    @classmethod
    def restored(cls, arrays: dict, geometry: dict) -> "_Conv":
        """A convolution from what ``Int8Net.save`` wrote (its arrays and its geometry)."""
        conv = cls.__new__(cls)
        conv.prepared = {}
        conv.wq, conv.w_scale, conv.bias = arrays["wq"], arrays["w_scale"], arrays["bias"]
        conv.y_scale, conv.y_zero_point = np.float32(arrays["y_scale"]), np.uint8(arrays["y_zero_point"])
        for key in cls.GEOMETRY:
            value = geometry[key]
            setattr(conv, key, tuple(value) if isinstance(value, list) else value)
        return conv

    def arrays(self) -> dict:
        """The integers and scales a file holds."""
        return {"wq": self.wq, "w_scale": self.w_scale, "bias": self.bias,
                "y_scale": np.float32(self.y_scale), "y_zero_point": np.uint8(self.y_zero_point)}

    def __init__(self, conv: QuantConv2d, act, out: ActQuant):
        w = host(conv.weight)
        self.w_scale, zero, axis = weight_qparams(w, conv.scheme)
        q, _ = quantize_array(w, self.w_scale, zero, -128, 127, axis)
        self.wq = q.astype(np.int8)
        self.w_scale = np.broadcast_to(np.asarray(self.w_scale, np.float32), (w.shape[0],)).copy()
        self.bias = host(conv.bias).astype(np.float32)
        self.stride, self.padding, self.dilation, self.groups = (conv.stride, conv.padding,
                                                                 conv.dilation, conv.groups)
        self.relu6 = type(act) is nn.ReLU6
        self.y_scale, self.y_zero_point = np.float32(out.scale), np.uint8(out.zero_point)
        self.prepared = {}  # (kernel set, dtype, x_scale, x_zero_point) -> prepared convolution

    def prepare(self, kernels, dtype, x_scale, x_zero_point, add=None):
        """The kernel set's prepared convolution for inputs of this dtype and quantization
        (made once, then kept), with ``add`` (the residual's and the sum's scales and zero
        points) where it adds a residual."""
        key = (kernels, np.dtype(dtype), float(x_scale), int(x_zero_point), add)
        conv = self.prepared.get(key)
        if conv is None:
            bias_q = np.rint(self.bias / (np.float32(x_scale) * self.w_scale)).astype(np.int32)
            conv = self.prepared[key] = kernels.prepare_qlinear_conv2d(
                np.float32(x_scale), np.uint8(x_zero_point), dtype, self.wq, self.w_scale,
                np.int8(0), bias_q, self.y_scale, self.y_zero_point, self.stride, self.padding,
                self.groups, self.dilation, relu6=self.relu6, residual=add)
        return conv

    def __call__(self, xq, x_scale, x_zero_point, residual=None):
        """The output ``(q, scale, zero_point)``; with ``residual = (aq, a_scale, a_zero_point,
        sum_scale, sum_zero_point)``, QLinearAdd of aq and the output instead (the kernel set
        may do it in the convolution's epilogue)."""
        # the kernel set's prepared convolution, made on the first call for this input's
        # quantization (fixed once calibrated: each layer is made once): the weights laid out
        # and the arguments checked once, not on every call
        add = None if residual is None else tuple(residual[1:])
        conv = self.prepare(kernels_for(xq), xq.dtype, x_scale, x_zero_point, add)
        if residual is None:
            return conv(xq), self.y_scale, self.y_zero_point
        return conv(xq, residual[0]), *add[2:]


class _Block:
    """An inverted residual block: its convolutions, then the residual sum if it has one."""

    FUSE = True
    """Run a block as the kernel set's fused block where it has one
    (``prepare_qlinear_block``); read at each call (False: layer by layer, for an A/B)."""

    def __init__(self, convs, out: ActQuant | None):
        self.convs = convs
        self.out = None if out is None else (np.float32(out.scale), np.uint8(out.zero_point))
        self.fused = {}  # (kernel set, dtype, x_scale, x_zero_point) -> fused block or None

    def _fused(self, kernels, dtype, x_scale, x_zero_point):
        """The kernel set's fused block for this input quantization, or None (made once)."""
        key = (kernels, np.dtype(dtype), float(x_scale), int(x_zero_point))
        if key not in self.fused:
            fused = None
            if len(self.convs) > 1:
                prepared, s, z = [], x_scale, x_zero_point
                for i, conv in enumerate(self.convs):
                    last = i == len(self.convs) - 1
                    add = (x_scale, x_zero_point, *self.out) if last and self.out else None
                    prepared.append(conv.prepare(kernels, dtype, s, z, add))
                    dtype, s, z = conv.y_zero_point.dtype, conv.y_scale, conv.y_zero_point
                fused = kernels.prepare_qlinear_block(prepared)
            self.fused[key] = fused
        return self.fused[key]

    def __call__(self, xq, x_scale, x_zero_point):
        if self.FUSE:
            fused = self._fused(kernels_for(xq), xq.dtype, x_scale, x_zero_point)
            if fused is not None:
                last = self.convs[-1]
                qparams = self.out if self.out is not None else (last.y_scale, last.y_zero_point)
                return fused(xq), *qparams
        yq, ys, yz = xq, x_scale, x_zero_point
        for conv in self.convs[:-1]:
            yq, ys, yz = conv(yq, ys, yz)
        # the residual sum (QLinearAdd) given to the last convolution, the projection
        residual = None if self.out is None else (xq, x_scale, x_zero_point, *self.out)
        return self.convs[-1](yq, ys, yz, residual)


def _convs(seq) -> list:
    """The ``_Conv`` s of a converted Sequential: (QuantConv2d, activation, ActQuant) or
    (QuantConv2d, ActQuant) runs."""
    layers, out, i = [], [], 0
    for layer in seq:  # the block's own Sequentials (expansion, depthwise) opened in place
        layers += list(layer) if type(layer) is nn.Sequential else [layer]
    while i < len(layers):
        if type(layers[i]) is not QuantConv2d:
            raise TypeError(f"Int8Net: expected a QuantConv2d, got a {type(layers[i]).__name__}")
        if type(layers[i + 1]) is ActQuant:
            out.append(_Conv(layers[i], None, layers[i + 1]))
            i += 2
        else:
            out.append(_Conv(layers[i], layers[i + 1], layers[i + 2]))
            i += 3
    return out


class Int8Net:
    """A calibrated MobileNetV2 view as integers (see the module).

    Args:
        input_qparams: ``(scale, zero_point)`` of the image.
        steps: The feature layers, each ``step(xq, scale, zero_point) -> (yq, scale,
            zero_point)``.
        classifier: ``(weight, bias)``: the Linear's dequantized int8 weight and float bias.
    """

    def __init__(self, input_qparams, steps, classifier):
        self.input_qparams, self.steps, self.classifier = input_qparams, steps, classifier

    @classmethod
    def from_view(cls, qnet: QuantizedNet) -> "Int8Net":
        """The int8 network of a calibrated view.

        Args:
            qnet: The view, after [calibrate][tinymbv2.quant.ptq.calibrate].

        Returns:
            The ``Int8Net``.

        Raises:
            TypeError: Not a calibrated view of a MobileNetV2.
            ValueError: An activation not calibrated.
        """
        if not isinstance(qnet, QuantizedNet) or not isinstance(qnet.body, MobileNetV2):
            raise TypeError(f"Int8Net.from_view: expected a QuantizedNet of a MobileNetV2, got "
                            f"{type(qnet).__name__}")
        if any(m.scale is None for m in qnet.act_quants()):
            raise ValueError("Int8Net.from_view: an activation has no scale: calibrate the view "
                             "first")
        steps = []
        for layer in qnet.body.features:
            if type(layer) is QuantInvertedResidual:
                steps.append(_Block(_convs(layer.conv), layer.out_quant))
            else:
                steps.append(_Block(_convs(layer), None))
        linear = next(m for m in qnet.body.classifier if type(m) is QuantLinear)
        w = host(linear.weight)
        scale, zero, axis = weight_qparams(w, linear.scheme)
        q, _ = quantize_array(w, scale, zero, -128, 127, axis)
        shape = (-1, 1) if axis is not None else ()
        weight = (q.astype(np.float32) * np.asarray(scale, np.float32).reshape(shape))
        bias = None if linear.bias is None else host(linear.bias).astype(np.float32)
        inp = qnet.input_quant
        return cls((np.float32(inp.scale), np.uint8(inp.zero_point)), steps, (weight, bias))

    def features(self, x):
        """The last feature map's integers and quantization: ``(q, scale, zero_point)``.

        Args:
            x: (N, C, H, W) float images, normalised as the model takes them.

        Returns:
            The uint8 map (N, C', H', W') and its scale and zero point.
        """
        x = np.asarray(x, np.float32)
        q, s, z = kernels_for(x).quantize_uint8(x, *self.input_qparams), *self.input_qparams
        for step in self.steps:
            q, s, z = step(q, s, z)
        return q, s, z

    def __call__(self, x):
        """The logits (N, classes), float32, of float images x (N, C, H, W).

        Args:
            x: The images, normalised as the model takes them.

        Returns:
            The logits.
        """
        q, s, z = self.features(x)
        kernels = kernels_for(q)
        pooled = kernels.dequantize_global_average_pool(q, s, z)
        weight, bias = self.classifier
        logits = kernels.matmul(pooled, weight.T)
        return logits if bias is None else logits + bias

    def save(self, path):
        """Write the int8 network to ``path`` (.npz), atomically: int8 weights, float32 scales
        and biases, uint8 zero points, and each layer's geometry (JSON).

        Args:
            path: The file.

        Returns:
            The path written.
        """
        arrays, layout = {}, []
        for b, step in enumerate(self.steps):
            convs = []
            for c, conv in enumerate(step.convs):
                arrays.update({f"{b}.{c}.{k}": v for k, v in conv.arrays().items()})
                convs.append({k: getattr(conv, k) for k in _Conv.GEOMETRY})
            layout.append({"convs": convs, "out": None if step.out is None else
                           [float(step.out[0]), int(step.out[1])]})
        weight, bias = self.classifier
        arrays["classifier.weight"] = weight
        if bias is not None:
            arrays["classifier.bias"] = bias
        meta = {"input": [float(self.input_qparams[0]), int(self.input_qparams[1])],
                "steps": layout}

        def write(f):
            buffer = io.BytesIO()
            np.savez(buffer, **arrays, meta=np.array(json.dumps(meta)))
            f.write(buffer.getvalue())

        return write_atomically(path, write)

    @classmethod
    def load(cls, path) -> "Int8Net":
        """Read an int8 network ``save`` wrote.

        Args:
            path: The file.

        Returns:
            The ``Int8Net``.
        """
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
        steps = []
        for b, layer in enumerate(meta["steps"]):
            convs = [_Conv.restored({k: arrays[f"{b}.{c}.{k}"] for k in
                                     ("wq", "w_scale", "bias", "y_scale", "y_zero_point")}, geometry)
                     for c, geometry in enumerate(layer["convs"])]
            step = _Block(convs, None)
            step.out = None if layer["out"] is None else (np.float32(layer["out"][0]),
                                                          np.uint8(layer["out"][1]))
            steps.append(step)
        scale, zero = meta["input"]
        return cls((np.float32(scale), np.uint8(zero)), steps,
                   (arrays["classifier.weight"], arrays.get("classifier.bias")))

    def weight_bytes(self) -> int:
        """The bytes of the int8 weights and their scales and biases (what a file holds)."""
        total = 0
        for step in self.steps:
            for conv in step.convs:
                total += conv.wq.nbytes + conv.w_scale.nbytes + conv.bias.nbytes
        weight, bias = self.classifier
        return total + weight.size + (0 if bias is None else bias.nbytes)
