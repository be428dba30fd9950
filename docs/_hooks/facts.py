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

    try:
        [].append(1, 2, 3)
    except TypeError as exc:
        out["append_error"] = f"TypeError: {exc}"
    out["version"] = tinymbv2.__version__
    return out


if __name__ == "__main__":
    for k, v in compute().items():
        print(f"{k:24s} {v}")
