"""Deployment: BatchNorm folding and ONNX export (layer 7).

    from tinymbv2.export import to_onnx
    to_onnx(model, "model.onnx", input_shape=(1, 1, 28, 28))   # BatchNorm folded, opset 17

[fold_bn][tinymbv2.export.folding.fold_bn] is the arithmetic of folding a BatchNorm into
the convolution before it, shared with quantization; ``to_onnx`` writes the network node
by node with the ``onnx`` package (the ``deploy`` extra: ``pip install -e '.[deploy]'``),
which is imported only when a graph is written.
"""
from .folding import conv_bn_pairs, fold_bn, fold_model  # noqa: F401
from .onnx_graph import EXPORTERS, build_onnx_model, to_onnx  # noqa: F401
