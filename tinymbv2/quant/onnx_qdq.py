r"""The calibrated quantized view as a QDQ ONNX file: int8 weights and uint8 activations.

ONNX writes a quantized network in "QDQ" form: the float graph, with each quantized tensor
passed through a ``QuantizeLinear`` ($q = \text{saturate}(\text{round}(x / s) + z)$) and a
``DequantizeLinear`` ($(q - z)\,s$) pair, and each weight stored as integers followed by a
``DequantizeLinear``. The file says exactly which tensors are 8-bit and with which scale; a
runtime (onnxruntime) fuses each ``DequantizeLinear -> Conv -> QuantizeLinear`` it recognises
into an integer kernel (``QLinearConv``) and runs it in int8. Written here from a
[QuantizedNet][tinymbv2.quant.ptq.QuantizedNet] after ``calibrate``:

| view's module | nodes |
|---|---|
| ``QuantConv2d`` | int8 weight (per output channel: ``axis=0``) -> ``DequantizeLinear``; ``Conv`` with the float bias |
| ``QuantLinear`` | int8 weight -> ``DequantizeLinear``; ``Gemm`` |
| ``ActQuant`` | ``QuantizeLinear`` -> ``DequantizeLinear`` (uint8, one scale) |
| ``QuantInvertedResidual`` | the block's nodes, ``Add``, the sum's pair |

The weight integers are those the view's fake quantization computes (``quantize_array``), so
the file's dequantized weights are the view's to the bit; the rest of the graph is the float
network's exporters' (``tinymbv2.export.onnx_graph``), whose table this module extends.
"""
from __future__ import annotations

import numpy as np

from ..export.folding import host
from ..export.onnx_graph import EXPORTERS, GraphBuilder, export_module
from ..export import onnx_graph
from .fake_quant import quantize_array
from .ptq import ActQuant, QuantConv2d, QuantInvertedResidual, QuantizedNet, QuantLinear, weight_qparams

_INT_TYPES = {"int8": np.int8, "uint8": np.uint8}


def _int_constant(g: GraphBuilder, name: str, array, dtype: str) -> str:
    """An int8 or uint8 initializer (``GraphBuilder.constant`` stores integers as int64)."""
    array = np.asarray(array).astype(_INT_TYPES[dtype])
    g.initializers.append(g.onnx.numpy_helper.from_array(array, name))
    return name


def _weight(g: GraphBuilder, layer, name: str) -> str:
    """The layer's int8 weight and its ``DequantizeLinear``; returns the float weight's value."""
    w = host(layer.weight)
    scale, zero, axis = weight_qparams(w, layer.scheme)
    q, _ = quantize_array(w, scale, zero, -128, 127, axis)
    inputs = [_int_constant(g, f"{name}.weight_quantized", q, "int8"),
              g.constant(f"{name}.weight_scale", np.asarray(scale, np.float32)),
              _int_constant(g, f"{name}.weight_zero_point", zero, "int8")]
    attributes = {} if axis is None else {"axis": axis}
    return g.node("DequantizeLinear", inputs, f"{name}.weight", w.shape,
                  doc=f"int8 weight, {layer.scheme}", **attributes)


def _quant_conv(g: GraphBuilder, conv: QuantConv2d, x: str) -> str:
    name = g.name(conv)
    n, _, h, w = g.shapes[x]
    co, _, kh, kw = conv.weight.shape
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    inputs = [x, _weight(g, conv, name)]
    if conv.bias is not None:   # None: a head's conv that had neither a bias nor a BatchNorm
        inputs.append(g.constant(f"{name}.bias", host(conv.bias)))
    return g.node("Conv", inputs, name, (n, co, ho, wo), doc="BatchNorm folded in",
                  kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw],
                  dilations=[dh, dw], group=conv.groups)


def _quant_linear(g: GraphBuilder, m: QuantLinear, x: str) -> str:
    name = g.name(m)
    inputs = [x, _weight(g, m, name)]
    if m.bias is not None:
        inputs.append(g.constant(f"{name}.bias", host(m.bias)))
    return g.node("Gemm", inputs, name, (g.shapes[x][0], m.weight.shape[0]), transB=1)


def _act_quant(g: GraphBuilder, m: ActQuant, x: str) -> str:
    name = g.name(m)
    if m.scale is None:
        raise ValueError(f"to_qdq_onnx: {name} has no scale yet: calibrate the view first")
    scale = g.constant(f"{name}.scale", np.asarray(m.scale, np.float32))
    zero = _int_constant(g, f"{name}.zero_point", m.zero_point, "uint8")
    q = g.node("QuantizeLinear", [x, scale, zero], f"{name}.quantized", g.shapes[x])
    return g.node("DequantizeLinear", [q, scale, zero], name, g.shapes[x])


def _quant_block(g: GraphBuilder, block: QuantInvertedResidual, x: str) -> str:
    y = export_module(g, block.conv, x)
    if not block.use_res_connect:
        return y
    total = g.node("Add", [x, y], f"{g.name(block)}.add", g.shapes[y])
    return export_module(g, block.out_quant, total)


def _quantized_net(g: GraphBuilder, net: QuantizedNet, x: str) -> str:
    return export_module(g, net.body, export_module(g, net.input_quant, x))


EXPORTERS.update({QuantConv2d: _quant_conv, QuantLinear: _quant_linear, ActQuant: _act_quant,
                  QuantInvertedResidual: _quant_block, QuantizedNet: _quantized_net})


def to_qdq_onnx(qnet: QuantizedNet, path, input_shape, opset: int = 17, metadata=None):
    """Write a calibrated quantized view as a QDQ ONNX file (see the module).

    Args:
        qnet: The view, after [calibrate][tinymbv2.quant.ptq.calibrate].
        path: The ``.onnx`` file (written atomically, as ``to_onnx`` writes).
        input_shape: (N, C, H, W), fixed in the graph.
        opset: 13 or newer (per-channel ``DequantizeLinear``).
        metadata: ``{key: value}`` stored as the model's metadata properties.

    Returns:
        The path written.

    Raises:
        TypeError: ``qnet`` not a QuantizedNet.
        ValueError: An activation not calibrated, or an opset below 13.
    """
    if not isinstance(qnet, QuantizedNet):
        raise TypeError(f"to_qdq_onnx: expected a QuantizedNet (tinymbv2.quant.quantize_model), "
                        f"got {type(qnet).__name__}")
    if not isinstance(opset, int) or opset < 13:
        raise ValueError(f"to_qdq_onnx: expected opset >= 13 (per-channel DequantizeLinear), got "
                         f"{opset!r}")
    return onnx_graph.to_onnx(qnet, path, input_shape, opset=opset, fold=False, metadata=metadata)
