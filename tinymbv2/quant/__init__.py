"""Post-training quantization and quantization-aware training, written here (issue 25).

The pieces, each in its own module:

* ``qparams``: the integer ranges of int8 and uint8 and the scale and zero point that map a
  float range onto one (symmetric or affine, per tensor or per channel), as PyTorch's
  observers compute them;
* ``fake_quant``: quantize-then-dequantize in float, $\\hat x = (\\text{clamp}(\\text{round}
  (x / s) + z) - z)\\, s$, a differentiable op whose backward is the straight-through
  estimator: what quantization-aware training trains through;
* ``observers``: the float range of an activation, from calibration batches: min/max,
  percentile, or the clipping that minimises the squared quantization error;
* ``ptq``: a trained classifier's quantized view (BatchNorm folded, int8 weights, uint8
  activations, ReLU6's range known), calibrated on a few images; training it is
  quantization-aware training;
* ``onnx_qdq``: the calibrated view as a QDQ ONNX file (int8 weights, uint8 activations),
  which onnxruntime runs with its integer kernels;
* ``int8_net``: the calibrated view run in integers, on the kernel sets' ``qlinear_conv2d``.
"""
from .fake_quant import fake_quantize
from .int8_net import Int8Net
from .onnx_qdq import to_qdq_onnx
from .observers import MinMaxObserver, MSEObserver, PercentileObserver
from .ptq import QuantizedNet, calibrate, quantize_model
from .qparams import QUANT_RANGES, choose_qparams, quant_range

__all__ = ["Int8Net", "fake_quantize", "MinMaxObserver", "MSEObserver", "PercentileObserver",
           "QUANT_RANGES", "QuantizedNet", "calibrate", "choose_qparams", "quant_range",
           "quantize_model", "to_qdq_onnx"]
