"""Per-layer parameters, multiply-adds and activation sizes, computed analytically.

``summary(model, input_size=(3, 224, 224))`` propagates the input *shape*
through the module tree (nothing is run, so 224 px costs microseconds) and
counts, per layer, with the output (N, Co, Ho, Wo):

    conv   MACs = N * Co * Ho * Wo * (Ci / groups) * kh * kw
    linear MACs = N * in * out
    activation bytes = number of output elements * bytes per element

BatchNorm, ReLU6, pooling and the residual add are counted as 0 multiply-adds,
the convention of the paper's Table 3 and of torchvision's reported "ops"; so are a
segmentation model's bilinear resizing (``nn.Upsample``, ``F.interpolate`` in ASPP's
pooling branch and after the head: a few operations per output pixel, no weights),
concatenation and LR-ASPP's gate. The
conv MACs split into the paper's section 3.1 kinds: pointwise (1x1), depthwise
(groups = channels) and standard (a dense kxk conv: MobileNetV2's stem); the
depthwise separable factorisation costs $h w d (k^2 + d')$ instead of
$h w d d' k^2$. Width 1.0 at 224 px: 300,774,272 MACs, 267.9M of them pointwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import nn
from ..functional.resizing import output_size
from .deeplabv3 import ASPP, ASPPPooling, DeepLabV3, LRASPPHead
from .mobilenetv2 import InvertedResidual, MobileNetV2
from .ssdlite import SSDLite


@dataclass(frozen=True)
class LayerRow:
    """One layer: dotted name, type, output shape, own parameters, MACs, output bytes."""

    name: str
    type: str
    output_shape: tuple
    params: int
    macs: int
    activation_bytes: int
    macs_kind: str | None = None  # "standard", "depthwise", "pointwise", "linear"


class Summary:
    """The rows of [summary][tinymbv2.models.summary.summary] and their totals.

    ``str()`` gives the table.

    Args:
        model_name: The model's class name, for the title.
        input_shape: The input shape (N, C, H, W).
        rows: One [LayerRow][tinymbv2.models.summary.LayerRow] per layer.
        total_params: The model's parameters, each shared one once.
        output_shape: The model's output shape; None: the last row's.
    """

    def __init__(self, model_name: str, input_shape: tuple, rows: list[LayerRow],
                 total_params: int, output_shape: tuple | None = None):
        self.model_name, self.input_shape, self.rows = model_name, input_shape, rows
        self.total_params = total_params
        self.total_macs = sum(r.macs for r in rows)
        self.total_activation_bytes = sum(r.activation_bytes for r in rows)
        self.max_activation_bytes = max((r.activation_bytes for r in rows), default=0)
        if output_shape is None:
            output_shape = rows[-1].output_shape if rows else input_shape
        self.output_shape = tuple(output_shape)
        kinds = {}
        for r in rows:
            if r.macs_kind:
                kinds[r.macs_kind] = kinds.get(r.macs_kind, 0) + r.macs
        self.macs_by_kind = kinds

    def part(self, prefix: str) -> tuple[int, int]:
        """The parameters and multiply-adds of the layers whose names start with ``prefix``.

        Args:
            prefix: A dotted module name, e.g. ``"head.classification_head"``.

        Returns:
            ``(params, macs)``.
        """
        rows = [r for r in self.rows if r.name == prefix or r.name.startswith(prefix + ".")]
        return sum(r.params for r in rows), sum(r.macs for r in rows)

    def __len__(self):
        return len(self.rows)

    def __repr__(self):
        return (f"Summary({self.model_name}, input {self.input_shape}, "
                f"params={self.total_params:,}, macs={self.total_macs:,})")

    def __str__(self):
        head = ("layer", "type", "output shape", "params", "MACs", "act. KiB")
        table = [head] + [
            (r.name, r.type, "x".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.macs:,}",
             f"{r.activation_bytes / 1024:,.1f}")
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        align = ["<", "<", "<", ">", ">", ">"]

        def fmt(row):
            return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(row, align, widths)).rstrip()

        rule = "-" * len(fmt(head))
        split = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in sorted(self.macs_by_kind.items(),
                                                                        key=lambda kv: -kv[1]))
        title = f"{self.model_name}, input {'x'.join(map(str, self.input_shape))}"
        macs = f"{self.total_macs:,} ({self.total_macs / 1e6:.1f}M: {split})"
        lines = [title, rule, fmt(head), rule, *(fmt(row) for row in table[1:]), rule,
                 f"total parameters:    {self.total_params:,}",
                 f"total multiply-adds: {macs}",
                 f"activations:         {self.total_activation_bytes / 2**20:,.2f} MiB in all, "
                 f"largest {self.max_activation_bytes / 2**20:,.2f} MiB"]
        return "\n".join(lines)


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _own_params(module) -> int:
    return sum(int(p.size) for p in module.parameters(recurse=False))


def _expect(module, name, shape, rank, channels=None, axis=1):
    if len(shape) != rank or (channels is not None and shape[axis] != channels):
        want = f"rank {rank}" + (f" with {channels} channels on axis {axis}" if channels else "")
        raise ValueError(f"summary: layer {name!r} ({module!r}) expected {want}, got shape {shape}")


def _conv_kind(conv) -> str:
    if conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels:
        return "depthwise"
    if conv.kernel_size == (1, 1) and conv.groups == 1:
        return "pointwise"
    return "standard"


def _leaf(module, name, shape, itemsize):
    """(output shape, LayerRow) for a layer, or None if ``module`` is not a layer."""
    macs, kind = 0, None
    if isinstance(module, nn.Conv2d):
        _expect(module, name, shape, 4, module.in_channels)
        out = module.output_shape(shape)
        kh, kw = module.kernel_size
        macs = _numel(out) * (module.in_channels // module.groups) * kh * kw
        kind = _conv_kind(module)
    elif isinstance(module, nn.BatchNorm2d):
        _expect(module, name, shape, 4, module.num_features)
        out = shape
    elif isinstance(module, (nn.ReLU6, nn.ReLU, nn.Sigmoid, nn.Dropout, nn.Identity)):
        out = shape
    elif isinstance(module, nn.Upsample):
        _expect(module, name, shape, 4)
        out = tuple(shape[:2]) + output_size(name, shape[2:], module.size, module.scale_factor)[0]
    elif isinstance(module, nn.AdaptiveAvgPool2d):
        _expect(module, name, shape, 4)
        out = tuple(shape[:2]) + module.output_size
    elif isinstance(module, nn.Flatten):
        if len(shape) <= module.start_dim:
            raise ValueError(f"summary: layer {name!r} cannot flatten shape {shape}")
        out = tuple(shape[:module.start_dim]) + (_numel(shape[module.start_dim:]),)
    elif isinstance(module, nn.Linear):
        _expect(module, name, shape, len(shape), module.in_features, axis=-1)
        out = tuple(shape[:-1]) + (module.out_features,)
        macs, kind = _numel(out) * module.in_features, "linear"
    else:
        return None
    out = tuple(int(d) for d in out)
    row = LayerRow(name, type(module).__name__, out, _own_params(module), int(macs),
                   _numel(out) * itemsize, kind)
    return out, row


def _propagate_ssdlite(model, name, shape, rows, itemsize):
    """The detector: the backbone's six maps, then each predictor on its map; the output is
    the class logits' (N, A, K)."""
    prefix = f"{name}." if name else ""
    maps = []
    for stage_name, stage in model.backbone.features.named_children():
        shape = _propagate(stage, f"{prefix}backbone.features.{stage_name}", shape, rows, itemsize)
        maps.append(shape)
    for block_name, block in model.backbone.extra.named_children():
        shape = _propagate(block, f"{prefix}backbone.extra.{block_name}", shape, rows, itemsize)
        maps.append(shape)
    anchors = 0
    for part in ("classification_head", "regression_head"):
        head = getattr(model.head, part)
        for (k, block), map_shape in zip(head.module_list.named_children(), maps):
            out = _propagate(block, f"{prefix}head.{part}.module_list.{k}", map_shape, rows, itemsize)
            anchors += _numel(out[1:]) // head.num_columns if part == "regression_head" else 0
    return (shape[0], anchors, model.num_classes)


def _resize_row(name, shape, hw, itemsize):
    """A bilinear resize of ``shape`` to the plane ``hw``: 0 multiply-adds (see the module)."""
    out = tuple(shape[:2]) + tuple(int(d) for d in hw)
    return out, LayerRow(name, "interpolate", out, 0, 0, _numel(out) * itemsize)


def _propagate_segmentation(model, name, shape, rows, itemsize):
    """The segmentation model: the backbone's layers in order (keeping the maps it returns),
    the head, and the logits resized to the input's plane."""
    prefix = f"{name}." if name else ""
    in_hw, maps = shape[2:], {}
    for layer_name, layer in model.backbone.named_children():
        shape = _propagate(layer, f"{prefix}backbone.{layer_name}", shape, rows, itemsize)
        if layer_name in model.backbone.return_layers:
            maps[model.backbone.return_layers[layer_name]] = shape
    head = f"{prefix}classifier"
    if isinstance(model.classifier, LRASPPHead):
        shape = _propagate_lraspp(model.classifier, head, maps, rows, itemsize)
    else:
        shape = _propagate(model.classifier, head, maps["out"], rows, itemsize)
    out, row = _resize_row(f"{prefix}upsample", shape, in_hw, itemsize)
    rows.append(row)
    return out


def _propagate_aspp(module, name, shape, rows, itemsize):
    """ASPP: every branch on the same input, their channels concatenated, then projected."""
    branches = [_propagate(branch, f"{name}.convs.{k}", shape, rows, itemsize)
                for k, branch in module.convs.named_children()]
    cat = (shape[0], sum(b[1] for b in branches)) + tuple(shape[2:])
    rows.append(LayerRow(f"{name}.cat", "concatenate", cat, 0, 0, _numel(cat) * itemsize))
    return _propagate(module.project, f"{name}.project", cat, rows, itemsize)


def _propagate_lraspp(head, name, maps, rows, itemsize):
    """LR-ASPP: the high branch gated and resized to the low map, each classified, added."""
    low, high = maps["low"], maps["high"]
    x = _propagate(head.cbr, f"{name}.cbr", high, rows, itemsize)
    _propagate(head.scale, f"{name}.scale", high, rows, itemsize)
    rows.append(LayerRow(f"{name}.gate", "multiply", x, 0, 0, _numel(x) * itemsize))
    x, row = _resize_row(f"{name}.upsample", x, low[2:], itemsize)
    rows.append(row)
    y = _propagate(head.low_classifier, f"{name}.low_classifier", low, rows, itemsize)
    _propagate(head.high_classifier, f"{name}.high_classifier", x, rows, itemsize)
    rows.append(LayerRow(f"{name}.add", "add", y, 0, 0, _numel(y) * itemsize))
    return y


def _propagate(module, name, shape, rows, itemsize):
    leaf = _leaf(module, name, shape, itemsize)
    if leaf is not None:
        rows.append(leaf[1])
        return leaf[0]
    if isinstance(module, SSDLite):
        return _propagate_ssdlite(module, name, shape, rows, itemsize)
    if isinstance(module, DeepLabV3):
        return _propagate_segmentation(module, name, shape, rows, itemsize)
    if isinstance(module, ASPP):
        return _propagate_aspp(module, name, shape, rows, itemsize)
    # containers whose forward applies their children in order
    if not isinstance(module, (nn.Sequential, InvertedResidual, MobileNetV2)):
        raise TypeError(
            f"summary: cannot propagate shapes through {type(module).__name__} "
            f"({name or 'model'}); "
            "known: the nn layers, Sequential, InvertedResidual, MobileNetV2, SSDLite and "
            "DeepLabV3"
        )
    in_shape = shape
    for child_name, child in module.named_children():
        shape = _propagate(child, f"{name}.{child_name}" if name else child_name, shape, rows,
                           itemsize)
    if isinstance(module, ASPPPooling):  # spread back over the input's plane
        shape, row = _resize_row(f"{name}.upsample", shape, in_shape[2:], itemsize)
        rows.append(row)
    if isinstance(module, InvertedResidual) and module.use_res_connect:
        if shape != in_shape:  # cannot happen for a well-formed block
            raise ValueError(f"summary: residual add in {name!r}: {in_shape} vs {shape}")
        rows.append(LayerRow(f"{name}.add", "residual add", shape, 0, 0, _numel(shape) * itemsize))
    return shape


def summary(model, input_size=(3, 224, 224), batch_size: int = 1) -> Summary:
    """Rows (name, output shape, parameters, multiply-adds, activation bytes) and totals.

    Nothing is computed on arrays: shapes are propagated through the module tree.

    Args:
        model: The network.
        input_size: (C, H, W) of one image.
        batch_size: N; scales the MACs and activations.

    Returns:
        The [Summary][tinymbv2.models.summary.Summary].

    Raises:
        ValueError: An input size the network does not take, or ``batch_size < 1``.
    """
    if (not isinstance(input_size, (tuple, list)) or len(input_size) != 3
            or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in input_size)):
        raise ValueError(
            f"summary: expected input_size as (C, H, W) positive ints, got {input_size!r}"
        )
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"summary: expected batch_size >= 1, got {batch_size!r}")
    params = list(model.parameters())
    itemsize = params[0].dtype.itemsize if params else 4
    shape = (int(batch_size),) + tuple(int(d) for d in input_size)
    rows: list[LayerRow] = []
    out = _propagate(model, "", shape, rows, itemsize)
    total = sum(int(p.size) for p in params)
    return Summary(type(model).__name__, shape, rows, total, out)
