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


if __name__ == "__main__":
    for k, v in compute().items():
        print(f"{k:24s} {v}")
