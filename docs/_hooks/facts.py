"""Numbers the documentation quotes, computed by the library at build time.

``compute()`` returns {name: formatted string}; a page writes ``{{ facts.name }}``
(see course.py). Everything here is analytic or tiny (no training, no 224-px
forward pass), so the docs build stays fast.
"""
from __future__ import annotations

import numpy as np


def _count(model, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def compute() -> dict:
    import tinymbv2
    from tinymbv2 import Tensor, nn
    from tinymbv2 import functional as F
    from tinymbv2 import optim
    from tinymbv2.models import TABLE2, mobilenet_v2, seed_article_net, summary

    out = {}
    for prefix, build in (("mbv2", mobilenet_v2), ("seed", seed_article_net)):
        model = build(seed=0)
        s = summary(model, input_size=(3, 224, 224))
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        pool = next(r for r in s.rows if r.name == "pool")
        out.update({
            f"{prefix}_blocks": len(model.blocks),
            f"{prefix}_residual": sum(b.use_res_connect for b in model.blocks),
            f"{prefix}_convs": len(convs),
            f"{prefix}_depthwise": sum(c.groups > 1 for c in convs),
            f"{prefix}_bn": _count(model, nn.BatchNorm2d),
            f"{prefix}_linear": _count(model, nn.Linear),
            f"{prefix}_params": f"{s.total_params:,}",
            f"{prefix}_macs": f"{s.total_macs:,}",
            f"{prefix}_macs_m": f"{s.total_macs / 1e6:.1f}M",
            f"{prefix}_params_m": f"{s.total_params / 1e6:.2f}M",
            f"{prefix}_pooled": pool.output_shape[1],
            f"{prefix}_logits": s.output_shape[-1],
        })
        if prefix == "mbv2":
            block = model.blocks[1]
            out["block_layers"] = ", ".join(
                type(m).__name__ for m in block.modules() if not list(m.children()))
            out["block_kernel_sizes"] = ", ".join(
                "x".join(map(str, m.kernel_size)) for m in block.modules() if isinstance(m, nn.Conv2d))
            out["macs_pointwise_share"] = f"{s.macs_by_kind['pointwise'] / s.total_macs:.0%}"
    out["table2_repeats"] = ", ".join(str(n) for _, _, n, _ in TABLE2)
    out["table2_total"] = sum(n for _, _, n, _ in TABLE2)

    # Dice: the gradient of (1 - dice) and of the article's (+ dice) on the true logit
    z = Tensor(np.zeros((4, 10)), requires_grad=True)
    target = np.array([0, 1, 2, 3])
    F.dice_loss(z, target).backward()
    g = float(z.grad[0, 0])
    out["dice_grad_true"] = f"{g:+.4f}"
    out["article_grad_true"] = f"{-g:+.4f}"

    # RMSprop: first step sizes in units of lr, PyTorch form vs TensorFlow form (alpha 0.9)
    steps = {}
    for cls, kw in ((optim.RMSprop, dict(alpha=0.9, eps=1e-8)),
                    (optim.RMSpropTF, dict(alpha=0.9, eps=1e-10))):
        p = nn.Parameter(np.zeros(1))
        p.grad = np.array([0.01])
        cls([p], lr=1.0, **kw).step()
        steps[cls.__name__] = -float(p.data[0])
    out["rmsprop_first_step"] = f"{steps['RMSprop']:.3g}"
    out["rmsproptf_first_step"] = f"{steps['RMSpropTF']:.3g}"
    out["sgd_first_step"] = "0.01"

    out.update(detector_facts())
    out.update(segmentation_facts())

    try:
        [].append(1, 2, 3)
    except TypeError as exc:
        out["append_error"] = f"TypeError: {exc}"
    out["version"] = tinymbv2.__version__
    return out


def detector_facts() -> dict:
    """The paper's Tables 5 and 6 (SSD and SSDLite on MobileNetV2, 80 classes + background,
    320 px) recomputed: our detector as built (6 default boxes in every layer, as torchvision),
    and with the TF Object Detection API's 3 boxes in the lowest layer (the paper's code);
    SSD's dense heads and extra layers built the same way for its row."""
    from tinymbv2 import nn
    from tinymbv2.models import Conv2dNormActivation, summary, ssdlite_mobilenet_v2
    from tinymbv2.models.ssdlite import EXTRA_CHANNELS, SSDLiteHead

    classes, size = 81, 320
    model = ssdlite_mobilenet_v2(classes, seed=0)
    s = summary(model, (3, size, size))
    backbone = s.part("backbone.features")
    maps = model.feature_map_sizes(size, size)
    channels = model.backbone.out_channels
    tf_boxes = [3, 6, 6, 6, 6, 6]                       # TF's reduce_boxes_in_lowest_layer
    model.head = SSDLiteHead(channels, tf_boxes, classes)
    tf = summary(model, (3, size, size))

    def cost(layers):  # [(module, (C, H, W) of its input)]: total parameters, multiply-adds
        counts = [summary(m, shape) for m, shape in layers]
        return sum(c.total_params for c in counts), sum(c.total_macs for c in counts)

    dense_head = [(nn.Conv2d(c, a * k, 3, padding=1), (c, h, w))
                  for (h, w), c, a in zip(maps, channels, tf_boxes) for k in (classes, 4)]
    dense_extras = []
    for (h, w), c_in, c_out in zip(maps[1:], channels[1:], EXTRA_CHANNELS):
        dense_extras.append((nn.Sequential(Conv2dNormActivation(c_in, c_out // 2, kernel_size=1),
                                           Conv2dNormActivation(c_out // 2, c_out, stride=2)), (c_in, h, w)))
    ssd = cost(dense_head + dense_extras)

    def fmt(params, macs):
        return f"{params / 1e6:.2f}M", f"{macs / 1e9:.3f}B"

    out = {}
    for name, (params, macs) in {
        "det_backbone": backbone,
        "det_lite6": (s.total_params - backbone[0], s.total_macs - backbone[1]),
        "det_lite3": (tf.total_params - backbone[0], tf.total_macs - backbone[1]),
        "det_ssd3": ssd,
        "det_total6": (s.total_params, s.total_macs),
        "det_total3": (tf.total_params, tf.total_macs),
    }.items():
        out[f"{name}_params"], out[f"{name}_macs"] = fmt(params, macs)
    out["det_lite3_macs_x2"] = f"{2 * (tf.total_macs - backbone[1]) / 1e9:.3f}B"
    return out


def tf_atrous_macs(model, s) -> int:
    """``s.total_macs`` as TensorFlow computes a dilated convolution (the paper's code):
    space-to-batch pads the map to a multiple of the rate, so a k x k conv of rate r on n
    pixels computes ``ceil((n + (k - 1) r) / r) r - (k - 1) r`` outputs per axis, not n."""
    from tinymbv2 import nn

    modules = dict(model.named_modules())
    total = s.total_macs
    for row in s.rows:
        conv = modules.get(row.name)
        if isinstance(conv, nn.Conv2d) and conv.dilation != (1, 1):
            k, r = conv.kernel_size[0], conv.dilation[0]
            spread = (k - 1) * r
            computed = [-(-(n + spread) // r) * r - spread for n in row.output_shape[2:]]
            total += row.macs * computed[0] * computed[1] // (row.output_shape[2] * row.output_shape[3]) - row.macs
    return total


def segmentation_facts() -> dict:
    """The paper's Table 7 (Mobile DeepLabv3 on MobileNetV2's 320-channel map, "MNet V2*",
    21 classes, output stride 16) recomputed at 512 px and at DeepLab's 513 px, with our
    multiply-adds and with TensorFlow's for atrous convolutions; the heads as built
    (torchvision's DeepLabHead; ASPP without atrous branches) and the paper's ASPP head (the
    DeepLabHead without its 3x3 conv); and what leaving out the 1280-channel layer saves."""
    from tinymbv2 import nn
    from tinymbv2.models import ASPP, Conv2dNormActivation, SimpleHead, deeplabv3_mobilenet_v2, summary

    out = {}

    def fmt(name, params, macs):
        out[f"{name}_params"], out[f"{name}_macs"] = f"{params / 1e6:.2f}M", f"{macs / 1e9:.2f}B"

    for px in (512, 513):
        for head in ("aspp", "simple"):
            model = deeplabv3_mobilenet_v2(21, 16, head, seed=0)
            s = summary(model, (3, px, px))
            conv3x3 = [s.part(f"classifier.{i}") for i in (1, 2, 3)] if head == "aspp" else [(0, 0)]
            extra = (sum(p for p, _ in conv3x3), sum(m for _, m in conv3x3))
            tf = tf_atrous_macs(model, s)
            fmt(f"seg_{head}_{px}", s.total_params, s.total_macs)
            if head == "aspp":
                fmt(f"seg_paper_{px}", s.total_params - extra[0], s.total_macs - extra[1])
                out[f"seg_paper_{px}_tf_macs"] = f"{(tf - extra[1]) / 1e9:.2f}B"
                fmt(f"seg_conv3x3_{px}", *extra)
            else:
                out[f"seg_simple_{px}_tf_macs"] = f"{tf / 1e9:.3f}B"
                fmt(f"seg_backbone_{px}", *s.part("backbone"))
            exact = "paper" if head == "aspp" else "simple"
            out[f"seg_{exact}_exact_params"] = f"{s.total_params - extra[0]:,}"
    n = 33  # the map at 513 px, output stride 16
    last = summary(Conv2dNormActivation(320, 1280, kernel_size=1), (320, n, n))
    fmt("seg_last_conv_513", last.total_params, last.total_macs)
    for name, head in (("simple", SimpleHead(1280, 21)),
                       ("paper", nn.Sequential(ASPP(1280, (6, 12, 18)), nn.Conv2d(256, 21, 1)))):
        narrow = (SimpleHead(320, 21) if name == "simple"
                  else nn.Sequential(ASPP(320, (6, 12, 18)), nn.Conv2d(256, 21, 1)))
        wide, narrow = summary(head, (1280, n, n)), summary(narrow, (320, n, n))
        fmt(f"seg_1280_{name}_extra_513", wide.total_params - narrow.total_params + last.total_params,
            wide.total_macs - narrow.total_macs + last.total_macs)
    return out


if __name__ == "__main__":
    for k, v in compute().items():
        print(f"{k:24s} {v}")
