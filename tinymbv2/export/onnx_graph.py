r"""A tinymbv2 model written out as an ONNX graph, node by node, with ``onnx.helper``.

ONNX holds a network as a list of nodes (an operator, its input and output value names,
its attributes) and initializers (the constant tensors: weights, statistics). This module
walks the model's module tree in the order ``forward`` runs it and writes, for each layer,
the nodes that compute the same thing:

| tinymbv2 | ONNX (opset 17) |
|---|---|
| ``Conv2d`` | ``Conv`` (``group``, ``strides``, ``pads``, ``dilations``) |
| ``Conv2d`` then ``BatchNorm2d`` | one ``Conv`` with the BatchNorm folded in ([fold_bn][tinymbv2.export.folding.fold_bn]); ``fold=False``: ``Conv``, ``BatchNormalization`` |
| ``ReLU6`` / ``ReLU`` / ``Sigmoid`` | ``Clip`` (min 0, max 6, given as inputs from opset 11) / ``Relu`` / ``Sigmoid`` |
| the residual ``x + conv(x)`` (or between expansions, Fig. 6b) | ``Add`` |
| ``AdaptiveAvgPool2d(1)``, ``Flatten(1)``, ``Linear`` | ``GlobalAveragePool``, ``Flatten``, ``Gemm`` (``transB=1``) |
| ``Dropout``, ``Identity`` | nothing (inference) |
| bilinear ``F.interpolate`` (segmentation), ``Upsample`` | ``Resize`` (``linear``: ``pytorch_half_pixel`` or ``align_corners``; ``nearest``: ``asymmetric``, ``floor``) |
| ASPP's branches, SSD's maps | ``Concat``; SSD's head also ``Reshape`` and ``Transpose`` |

Names follow the ``state_dict``: the conv ``features.0.0`` is the node ``features.0.0``
with the initializers ``features.0.0.weight`` (and ``.bias``), and its output value is
called ``features.0.0`` too, so a learner can put the graph (in Netron, say) next to
``print(model)``. A folded conv keeps the conv's names; its node's ``doc_string`` names
the BatchNorm folded into it.

One exporter per module type, chosen by the *exact* type (``EXPORTERS``): a subclass or a
layer not in the table is refused with a ``NotImplementedError`` naming it and where it
sits, before anything is written, rather than exported as something it is not (the fused
view of [fuse][tinymbv2.fusion.fuse] too: export the plain model, whose eval output the
fused one equals). The graph has a fixed input shape (batch included): its ``Resize`` and
``Reshape`` nodes are written with the sizes that shape gives.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import nn
from ..atomic import write_atomically
from ..functional.resizing import output_size
from ..models import deeplabv3, mobilenetv2, ssdlite
from .folding import fold_model, host

INPUT_NAME = "input"
MIN_OPSET = 11  # Clip's bounds as inputs, Resize's (roi, scales, sizes) inputs


def _onnx():
    """The ``onnx`` package, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("tinymbv2.export needs the onnx package: pip install -e '.[deploy]' "
                          "(onnx and onnxruntime)") from exc
    return onnx


class GraphBuilder:
    """The nodes, initializers and value shapes of the graph being written.

    Each exporter adds nodes through ``node`` and constants through ``constant``; the
    shape of every value is kept (``shapes``), so that a ``Resize`` or a ``Reshape`` can be
    written with its sizes and a layer can check what it gets.

    Args:
        model: The model being exported (its BatchNorm pairs are folded when ``fold``).
        opset: The ONNX opset the graph is written for.
        fold: Fold each Conv2d + BatchNorm2d pair into one ``Conv``.
    """

    def __init__(self, model: nn.Module, opset: int, fold: bool):
        self.onnx = _onnx()
        self.opset, self.fold = opset, fold
        self.nodes, self.initializers, self.shapes = [], [], {}
        self.names = {id(m): name for name, m in model.named_modules()}
        # conv id -> (folded weight, folded bias, BatchNorm name); ids of BatchNorms folded away
        self.folded, self.folded_away = {}, set()
        if fold:
            by_name = dict(model.named_modules())
            for conv_name, (weight, bias, bn_name) in fold_model(model).items():
                self.folded[id(by_name[conv_name])] = (weight, bias, bn_name)
                self.folded_away.add(id(by_name[bn_name]))

    def name(self, module: nn.Module) -> str:
        """The ``state_dict`` prefix of ``module`` (``"features.0.0"``; the model's is ``""``)."""
        return self.names[id(module)]

    def constant(self, name: str, array) -> str:
        """Add an initializer ``name`` holding ``array``; returns ``name``.

        Args:
            name: The initializer's name.
            array: Its values (floats are stored as float32, integers as int64).

        Returns:
            ``name``.
        """
        array = np.asarray(array)
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op_type: str, inputs, name: str, shape, doc: str = "", **attributes) -> str:
        """Add a node whose one output is the value ``name``, of shape ``shape``.

        Args:
            op_type: The ONNX operator (``"Conv"``, ``"Clip"``, ...).
            inputs: The input value names (``""`` for an optional input left out).
            name: The node's name and its output value's.
            shape: The output's shape.
            doc: The node's ``doc_string`` (what it came from, when not obvious).
            **attributes: The operator's attributes.

        Returns:
            ``name``.
        """
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name], name=name,
                                                     doc_string=doc or None, **attributes))
        self.shapes[name] = tuple(int(d) for d in shape)
        return name

    def resize(self, x: str, size, name: str, mode: str = "bilinear", align_corners: bool = False,
               scales=None) -> str:
        r"""Resize of the value ``x`` (N, C, H, W) to (N, C, Ho, Wo), as ``F.interpolate``.

        Bilinear: ONNX's ``linear`` mode, with ``align_corners=False`` as
        ``pytorch_half_pixel`` (the source position $(i + 0.5)\,H / H_o - 0.5$, clamped to
        the image: PyTorch's rule) and ``True`` as ``align_corners``
        ($i\,(H - 1) / (H_o - 1)$). Nearest: ``asymmetric`` positions $i\,H / H_o$ rounded
        down (``floor``), PyTorch's ``"nearest"``. Given ``scales`` (a scale factor, not a
        size), the positions use $1 / s$, as PyTorch's do, so the graph gets the scales
        rather than the sizes.

        Args:
            x: The input value's name.
            size: (Ho, Wo).
            name: The node's name.
            mode: ``"bilinear"`` or ``"nearest"``.
            align_corners: Bilinear only, as ``F.interpolate``'s.
            scales: (sh, sw), the scale factor it was given, or None (a size was).

        Returns:
            The output value's name.
        """
        n, c = self.shapes[x][:2]
        shape = (n, c, int(size[0]), int(size[1]))
        if scales is None:
            inputs = [x, "", "", self.constant(f"{name}.sizes", np.array(shape, dtype=np.int64))]
        else:
            factors = np.array([1.0, 1.0, *scales], dtype=np.float32)
            inputs = [x, "", self.constant(f"{name}.scales", factors)]
        if mode == "nearest":
            return self.node("Resize", inputs, name, shape, mode="nearest",
                             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        transform = "align_corners" if align_corners else "pytorch_half_pixel"
        return self.node("Resize", inputs, name, shape, mode="linear",
                         coordinate_transformation_mode=transform)


def export_module(g: GraphBuilder, module: nn.Module, x):
    """Write the nodes of ``module`` applied to the value(s) ``x``; returns its output value(s).

    Dispatches on the exact type of ``module`` through ``EXPORTERS``.

    Args:
        g: The graph being written.
        module: The module.
        x: Its input: a value name, or what its ``forward`` takes (a list or dict of names).

    Returns:
        The output value name(s), shaped as the module's ``forward`` returns them.

    Raises:
        NotImplementedError: A module type with no exporter, named with its place.
    """
    exporter = EXPORTERS.get(type(module))
    if exporter is None:
        where = f"at {g.name(module)!r}" if g.name(module) else "the model itself"
        raise NotImplementedError(
            f"to_onnx: no ONNX exporter for {type(module).__module__}.{type(module).__name__} "
            f"({where}); exported layer types: "
            f"{', '.join(sorted(t.__name__ for t in EXPORTERS))}"
            + ("; this is tinymbv2.fuse's view: export the plain model, which computes the same"
               if type(module).__module__ == "tinymbv2.fusion" else ""))
    return exporter(g, module, x)


# --- layers ---------------------------------------------------------------------------------

def _conv2d(g: GraphBuilder, conv: nn.Conv2d, x: str) -> str:
    name = g.name(conv)
    shape = g.shapes[x]
    if len(shape) != 4 or shape[1] != conv.in_channels:
        raise ValueError(f"to_onnx: {name} ({conv!r}) expected (N, {conv.in_channels}, H, W), "
                         f"got a value of shape {shape}")
    out_shape = conv.output_shape(shape)
    attributes = dict(kernel_shape=list(conv.kernel_size), strides=list(conv.stride),
                      pads=[conv.padding[0], conv.padding[1]] * 2,  # begins (h, w), ends (h, w)
                      dilations=list(conv.dilation), group=conv.groups)
    if id(conv) in g.folded:
        weight, bias, bn_name = g.folded[id(conv)]
        inputs = [x, g.constant(f"{name}.weight", weight), g.constant(f"{name}.bias", bias)]
        doc = f"Conv2d {name} with BatchNorm2d {bn_name} folded in"
        return g.node("Conv", inputs, name, out_shape, doc, **attributes)
    inputs = [x, g.constant(f"{name}.weight", host(conv.weight))]
    if conv.bias is not None:
        inputs.append(g.constant(f"{name}.bias", host(conv.bias)))
    return g.node("Conv", inputs, name, out_shape, **attributes)


def _batch_norm(g: GraphBuilder, bn: nn.BatchNorm2d, x: str) -> str:
    name = g.name(bn)
    if id(bn) in g.folded_away:
        return x  # already in the conv before it
    if bn.running_mean is None:
        raise NotImplementedError(f"to_onnx: {name} ({bn!r}) has no running statistics "
                                  "(track_running_stats=False): it normalises with each batch's, "
                                  "which an inference graph cannot hold as constants")
    c = bn.num_features
    gamma = np.ones(c) if bn.weight is None else host(bn.weight)
    beta = np.zeros(c) if bn.bias is None else host(bn.bias)
    inputs = [x, g.constant(f"{name}.weight", gamma), g.constant(f"{name}.bias", beta),
              g.constant(f"{name}.running_mean", host(bn.running_mean)),
              g.constant(f"{name}.running_var", host(bn.running_var))]
    return g.node("BatchNormalization", inputs, name, g.shapes[x], epsilon=bn.eps)


def _relu6(g: GraphBuilder, m: nn.ReLU6, x: str) -> str:
    name = g.name(m)  # from opset 11 Clip's bounds are inputs, not attributes
    bounds = [g.constant(f"{name}.min", np.array(0.0, np.float32)),
              g.constant(f"{name}.max", np.array(6.0, np.float32))]
    return g.node("Clip", [x, *bounds], name, g.shapes[x], doc="ReLU6: min(max(x, 0), 6)")


def _relu(g: GraphBuilder, m: nn.ReLU, x: str) -> str:
    return g.node("Relu", [x], g.name(m), g.shapes[x])


def _sigmoid(g: GraphBuilder, m: nn.Sigmoid, x: str) -> str:
    return g.node("Sigmoid", [x], g.name(m), g.shapes[x])


def _nothing_at_inference(g: GraphBuilder, m: nn.Module, x: str) -> str:
    return x  # Dropout is the identity in eval mode; Identity always


def _global_pool(g: GraphBuilder, m: nn.AdaptiveAvgPool2d, x: str) -> str:
    if m.output_size != (1, 1):
        raise NotImplementedError(f"to_onnx: {g.name(m)} ({m!r}): only output_size 1 (global "
                                  "average pooling) is exported")
    n, c = g.shapes[x][:2]
    return g.node("GlobalAveragePool", [x], g.name(m), (n, c, 1, 1))


def _flatten(g: GraphBuilder, m: nn.Flatten, x: str) -> str:
    shape = g.shapes[x]
    if m.start_dim != 1:  # ONNX's Flatten always gives a matrix; torch's keeps the first axes
        raise NotImplementedError(f"to_onnx: {g.name(m)} ({m!r}): only start_dim=1 is exported")
    return g.node("Flatten", [x], g.name(m), (shape[0], int(np.prod(shape[1:]))), axis=1)


def _linear(g: GraphBuilder, m: nn.Linear, x: str) -> str:
    name, shape = g.name(m), g.shapes[x]
    if len(shape) != 2 or shape[1] != m.in_features:
        raise ValueError(f"to_onnx: {name} ({m!r}) expected (N, {m.in_features}), got a value "
                         f"of shape {shape}")
    inputs = [x, g.constant(f"{name}.weight", host(m.weight))]
    if m.bias is not None:
        inputs.append(g.constant(f"{name}.bias", host(m.bias)))
    # Gemm: Y = X W^T + b, the weight stored (out, in) as in the model
    return g.node("Gemm", inputs, name, (shape[0], m.out_features), transB=1)


def _upsample(g: GraphBuilder, m: nn.Upsample, x: str) -> str:
    size, scales = output_size(f"to_onnx: {g.name(m)}", g.shapes[x][2:], m.size, m.scale_factor)
    return g.resize(x, size, g.name(m), m.mode, bool(m.align_corners), scales)


# --- containers and models ------------------------------------------------------------------

def _sequential(g: GraphBuilder, seq: nn.Sequential, x):
    for layer in seq:
        x = export_module(g, layer, x)
    return x


def _inverted_residual(g: GraphBuilder, block: mobilenetv2.InvertedResidual, x: str) -> str:
    y = export_module(g, block.conv, x)
    if not block.use_res_connect:
        return y
    return g.node("Add", [x, y], f"{g.name(block)}.add", g.shapes[y], doc="the residual: x + conv(x)")


def _expansion_shortcuts(g: GraphBuilder, features: mobilenetv2.ExpansionShortcuts, x: str) -> str:
    # Fig. 6b: each block's expanded tensor gets the previous block's added where the shapes
    # agree (InvertedResidual.forward_expansion_shortcut, written out layer by layer)
    expansion = None
    for layer in features:
        if type(layer) is not mobilenetv2.InvertedResidual:
            x, expansion = export_module(g, layer, x), None
            continue
        layers = list(layer.conv)
        n_expand = 1 if layer.expand_ratio != 1 else 0
        expanded = x
        for sub in layers[:n_expand]:
            expanded = export_module(g, sub, expanded)
        if expansion is not None and g.shapes[expansion] == g.shapes[expanded]:
            expanded = g.node("Add", [expanded, expansion], f"{g.name(layer)}.add",
                              g.shapes[expanded], doc="the shortcut between expansions (Fig. 6b)")
        x = expanded
        for sub in layers[n_expand:]:
            x = export_module(g, sub, x)
        expansion = expanded
    return x


def _mobilenet_v2(g: GraphBuilder, model: mobilenetv2.MobileNetV2, x: str) -> str:
    x = export_module(g, model.features, x)
    x = export_module(g, model.flatten, export_module(g, model.pool, x))
    return export_module(g, model.classifier, x)


def _intermediate_layers(g: GraphBuilder, layers: deeplabv3.IntermediateLayers, x: str) -> dict:
    out = {}
    for name, layer in layers.named_children():
        x = export_module(g, layer, x)
        if name in layers.return_layers:
            out[layers.return_layers[name]] = x
    return out


def _aspp_pooling(g: GraphBuilder, pooling: deeplabv3.ASPPPooling, x: str) -> str:
    size = g.shapes[x][2:]
    y = _sequential(g, pooling, x)
    return g.resize(y, size, f"{g.name(pooling)}.upsample")


def _aspp(g: GraphBuilder, aspp: deeplabv3.ASPP, x: str) -> str:
    branches = [export_module(g, branch, x) for branch in aspp.convs]
    n, _, h, w = g.shapes[branches[0]]
    channels = sum(g.shapes[b][1] for b in branches)
    cat = g.node("Concat", branches, f"{g.name(aspp)}.cat", (n, channels, h, w), axis=1)
    return export_module(g, aspp.project, cat)


def _lraspp_head(g: GraphBuilder, head: deeplabv3.LRASPPHead, features: dict) -> str:
    low, high = features["low"], features["high"]
    name = g.name(head)
    cbr, scale = export_module(g, head.cbr, high), export_module(g, head.scale, high)
    x = g.node("Mul", [cbr, scale], f"{name}.mul", g.shapes[cbr], doc="cbr(high) * scale(high)")
    x = g.resize(x, g.shapes[low][2:], f"{name}.upsample")
    lo, hi = export_module(g, head.low_classifier, low), export_module(g, head.high_classifier, x)
    return g.node("Add", [lo, hi], f"{name}.add", g.shapes[lo])


def _deeplab_v3(g: GraphBuilder, model: deeplabv3.DeepLabV3, x: str) -> str:
    size = g.shapes[x][2:]
    features = export_module(g, model.backbone, x)
    y = export_module(g, model.classifier, features if model.head == "lraspp" else features["out"])
    return g.resize(y, size, "logits")


def _ssdlite_backbone(g: GraphBuilder, backbone: ssdlite.SSDLiteBackbone, x: str) -> list:
    maps = []
    for stage in list(backbone.features) + list(backbone.extra):
        x = export_module(g, stage, x)
        maps.append(x)
    return maps


def _ssdlite_scoring_head(g: GraphBuilder, head: ssdlite.SSDLiteScoringHead, maps: list) -> str:
    name, k = g.name(head), head.num_columns
    results = []
    for i, (block, x) in enumerate(zip(head.module_list, maps)):
        y = export_module(g, block, x)                       # (N, a K, H, W)
        n, ak, h, w = g.shapes[y]
        five = g.constant(f"{name}.{i}.shape5", [n, ak // k, k, h, w])
        y = g.node("Reshape", [y, five], f"{name}.{i}.reshape", (n, ak // k, k, h, w))
        y = g.node("Transpose", [y], f"{name}.{i}.transpose", (n, h, w, ak // k, k),
                   perm=[0, 3, 4, 1, 2])                     # (N, H, W, a, K): cell by cell
        three = g.constant(f"{name}.{i}.shape3", [n, h * w * (ak // k), k])
        results.append(g.node("Reshape", [y, three], f"{name}.{i}.boxes", (n, h * w * (ak // k), k)))
    n = g.shapes[results[0]][0]
    boxes = sum(g.shapes[r][1] for r in results)
    return g.node("Concat", results, name, (n, boxes, k), axis=1)


def _ssdlite_head(g: GraphBuilder, head: ssdlite.SSDLiteHead, maps: list) -> tuple:
    return (export_module(g, head.classification_head, maps),
            export_module(g, head.regression_head, maps))


def _ssdlite(g: GraphBuilder, model: ssdlite.SSDLite, x: str) -> tuple:
    return export_module(g, model.head, export_module(g, model.backbone, x))


EXPORTERS = {
    nn.Conv2d: _conv2d, nn.BatchNorm2d: _batch_norm, nn.ReLU6: _relu6, nn.ReLU: _relu,
    nn.Sigmoid: _sigmoid, nn.Dropout: _nothing_at_inference, nn.Identity: _nothing_at_inference,
    nn.AdaptiveAvgPool2d: _global_pool, nn.Flatten: _flatten, nn.Linear: _linear,
    nn.Upsample: _upsample,
    nn.Sequential: _sequential,
    mobilenetv2.Conv2dNormActivation: _sequential,
    mobilenetv2.InvertedResidual: _inverted_residual,
    mobilenetv2.MobileNetV2: _mobilenet_v2,
    mobilenetv2.ExpansionShortcuts: _expansion_shortcuts,
    deeplabv3.ConvNormReLU: _sequential, deeplabv3.DeepLabHead: _sequential,
    deeplabv3.SimpleHead: _sequential, deeplabv3.IntermediateLayers: _intermediate_layers,
    deeplabv3.ASPPPooling: _aspp_pooling, deeplabv3.ASPP: _aspp,
    deeplabv3.LRASPPHead: _lraspp_head, deeplabv3.DeepLabV3: _deeplab_v3,
    ssdlite.SSDLiteBackbone: _ssdlite_backbone, ssdlite.SSDLiteScoringHead: _ssdlite_scoring_head,
    ssdlite.SSDLiteHead: _ssdlite_head, ssdlite.SSDLite: _ssdlite,
}


def _outputs(result) -> list[str]:
    """The graph's output value names from what the model's exporter returned."""
    if isinstance(result, str):
        return [result]
    if isinstance(result, (tuple, list)):
        return [name for part in result for name in _outputs(part)]
    if isinstance(result, dict):
        return [name for part in result.values() for name in _outputs(part)]
    raise TypeError(f"to_onnx: the model's exporter returned {type(result).__name__}")


def _check_arguments(model, input_shape, opset, fold):
    onnx = _onnx()
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_onnx: expected a tinymbv2 nn.Module, got {type(model).__name__}")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if (shape is None or len(shape) != 4
            or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1
                       for d in shape)):
        raise ValueError(f"to_onnx: expected input_shape (N, C, H, W) as four ints >= 1, "
                         f"got {input_shape!r}")
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"to_onnx: expected opset an int in [{MIN_OPSET}, {newest}] (the onnx "
                         f"package's newest), got {opset!r}")
    if not isinstance(fold, bool):
        raise TypeError(f"to_onnx: expected fold True or False, got {fold!r}")
    return tuple(int(d) for d in shape)


def build_onnx_model(model: nn.Module, input_shape, opset: int = 17, fold: bool = True,
                     metadata: dict | None = None):
    """The ONNX ``ModelProto`` of ``model`` in evaluation mode, checked, not written.

    See [to_onnx][tinymbv2.export.onnx_graph.to_onnx], which writes it.

    Args:
        model: A MobileNetV2 (any width, ``small_input``, ``seed_article_net``), a
            ``DeepLabV3`` or an ``SSDLite``.
        input_shape: (N, C, H, W), fixed in the graph.
        opset: The ONNX opset, 11 to the onnx package's newest.
        fold: Fold each BatchNorm into the conv before it.
        metadata: ``{key: value}`` stored as the model's metadata properties (strings),
            e.g. how its images are normalised; None: none.

    Returns:
        The ``onnx.ModelProto``, which ``onnx.checker.check_model`` has accepted.

    Raises:
        NotImplementedError: A layer type with no exporter (named, with its place).
        ValueError: An input shape or opset out of range, or a shape a layer does not take.
        TypeError: ``model`` not a Module, ``fold`` not a bool.
    """
    onnx = _onnx()
    shape = _check_arguments(model, input_shape, opset, fold)
    g = GraphBuilder(model, opset, fold)
    g.shapes[INPUT_NAME] = shape
    outputs = _outputs(export_module(g, model, INPUT_NAME))
    float32 = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        g.nodes, type(model).__name__,
        [onnx.helper.make_tensor_value_info(INPUT_NAME, float32, shape)],
        [onnx.helper.make_tensor_value_info(name, float32, g.shapes[name]) for name in outputs],
        initializer=g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="tinymbv2",
                                   doc_string=f"{type(model).__name__}, BatchNorm "
                                              f"{'folded' if fold else 'kept'}")
    if metadata:
        onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto, full_check=True)  # and shape inference agrees
    return proto


def to_onnx(model: nn.Module, path, input_shape, opset: int = 17, fold: bool = True,
            metadata: dict | None = None) -> Path:
    """Write ``model``, as it runs in evaluation mode, to the ONNX file ``path``.

    The graph is built node by node (see the module's table), checked with
    ``onnx.checker.check_model`` (with shape inference), and only then written, atomically:
    into a temporary file in the same folder, renamed over ``path`` (``os.replace``), as
    the checkpoints are. A model with a layer that cannot be exported raises before any
    file is opened; a failed write leaves ``path`` as it was.

    Inputs and outputs: ``"input"`` (N, C, H, W) float32; a classifier's logits are the
    value ``"classifier.1"`` (N, classes), a segmenter's ``"logits"`` (N, K, H, W), a
    detector's ``"head.classification_head"`` (N, A, classes) and
    ``"head.regression_head"`` (N, A, 4), the raw outputs before decoding and
    non-maximum suppression. Parameters are stored as float32.

    Args:
        model: A MobileNetV2 (any width, ``small_input``, ``seed_article_net``), a
            ``DeepLabV3`` (heads ``aspp``, ``simple``, ``lraspp``) or an ``SSDLite``.
        path: The ``.onnx`` file to write (its folder is created).
        input_shape: (N, C, H, W), fixed in the graph.
        opset: The ONNX opset, 11 to the onnx package's newest.
        fold: Fold each BatchNorm into the conv before it (one ``Conv``); False writes a
            ``BatchNormalization`` node after each conv, as the model has them.
        metadata: ``{key: value}`` stored as the model's metadata properties (strings),
            e.g. how its images are normalised; None: none.

    Returns:
        The path written.

    Raises:
        NotImplementedError: A layer type with no exporter (named, with its place).
        ValueError: An input shape or opset out of range, or a shape a layer does not take.
        TypeError: ``model`` not a Module, ``fold`` not a bool.
        ImportError: The onnx package is missing (``pip install -e '.[deploy]'``).
    """
    data = build_onnx_model(model, input_shape, opset, fold, metadata).SerializeToString()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda f: f.write(data))
