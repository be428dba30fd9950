# %% [markdown]
r"""
# 5. The inverted residual block and MobileNetV2

**The block** (paper Table 1). Input $x$ with $k$ channels, expansion factor $t$, stride $s$,
output $k'$ channels:

| step | operator | output |
|---|---|---|
| expand | $1\times1$ conv, BN, ReLU6 | $h \times w \times tk$ (skipped when $t = 1$) |
| filter | $3\times3$ depthwise conv, stride $s$, BN, ReLU6 | $\frac{h}{s} \times \frac{w}{s} \times tk$ |
| project | $1\times1$ conv, BN, **no activation** | $\frac{h}{s} \times \frac{w}{s} \times k'$ |

and $y = x + F(x)$ when $s = 1$ and $k = k'$ (otherwise $y = F(x)$). It is "inverted"
because a classic residual block (ResNet) is wide at the ends and thin in the middle;
this one is thin at the ends, where the shortcut connects, and wide in the middle, where the
cheap depthwise convolution does the spatial work. Its cost, for an $h\times w$ input, is

$$
h \cdot w \cdot t k \,\big(k + 9/s^2 + k'/s^2\big) \text{ multiply-adds}
$$

(expansion $h w \cdot k \cdot tk$, depthwise $\frac{hw}{s^2} \cdot 9 \cdot tk$, projection $\frac{hw}{s^2} tk \cdot k'$).

**The network** (paper Table 2) is that block repeated, row by row; each row is
$(t, c, n, s)$: expansion, output channels, repeats, stride of the first repeat.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import numpy as np
import matplotlib.pyplot as plt
import torch
import torchvision

import tinymbv2
from tinymbv2 import Tensor, nn
from tinymbv2.models import TABLE2, InvertedResidual, mobilenet_v2, seed_article_net, summary

torch.set_num_threads(2)
print(f"{'t':>3s} {'c':>5s} {'n':>3s} {'s':>3s}")
for t, c, n, s in TABLE2:
    print(f"{t:3d} {c:5d} {n:3d} {s:3d}")

# %% [markdown]
r"""
The model code is that table and a loop (see `tinymbv2/models/mobilenetv2.py`): a $3\times3$
stem conv to 32 channels with stride 2, then for every row `n` blocks, the first with stride
`s`, then a $1\times1$ conv to 1280 channels, global average pooling and one Linear layer.

## 5.1 Counting layers, parameters and multiply-adds against the paper

The paper states 3.4M parameters and 300M multiply-adds; torchvision's implementation has
exactly 3,504,872 parameters and 300,774,272 multiply-adds (conv + linear) at $224\times224$.
`summary` computes them from the shapes, without running the network.
"""

# %%
model = mobilenet_v2(seed=0)
s = summary(model, input_size=(3, 224, 224))
convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
count = {
    "bottleneck blocks": len(model.blocks),
    "blocks with a residual add": sum(b.use_res_connect for b in model.blocks),
    "convolutions": len(convs),
    "depthwise convolutions": sum(c.groups > 1 for c in convs),
    "BatchNorms": sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()),
    "Linear layers": sum(isinstance(m, nn.Linear) for m in model.modules()),
}
expected = {"bottleneck blocks": 17, "blocks with a residual add": 10, "convolutions": 52,
            "depthwise convolutions": 17, "BatchNorms": 52, "Linear layers": 1}
for k, v in count.items():
    print(f"{k:28s} {v:4d}   paper/torchvision: {expected[k]}")
print(f"{'parameters':28s} {s.total_params:,}   torchvision: 3,504,872   difference: {s.total_params - 3_504_872}")
print(f"{'multiply-adds':28s} {s.total_macs:,}   torchvision: 300,774,272   difference: {s.total_macs - 300_774_272}")
print("by kind:", {k: f"{v / 1e6:.1f}M" for k, v in s.macs_by_kind.items()})

# %% [markdown]
r"""
Where does the compute go? Per block, split into the $1\times1$ (pointwise) and depthwise
parts. The pointwise convolutions carry about 90% of the multiply-adds: that is why the
speed of a matrix product decides MobileNetV2's speed.
"""

# %%
def block_of(name):
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "features" else 19

kinds = ("standard", "depthwise", "pointwise", "linear")
per_block = {k: np.zeros(20) for k in kinds}
for r in s.rows:
    if r.macs_kind:
        per_block[r.macs_kind][block_of(r.name)] += r.macs / 1e6
fig, ax = plt.subplots(figsize=(9, 3.5))
bottom = np.zeros(20)
for k, color in zip(kinds, ("#888", "#e93", "#48c", "#4a4")):
    ax.bar(range(20), per_block[k], bottom=bottom, label=k, color=color)
    bottom += per_block[k]
ax.set_xticks(range(20), ["stem"] + [str(i) for i in range(1, 18)] + ["head", "fc"], fontsize=8)
ax.set_ylabel("million multiply-adds"); ax.legend(); ax.set_title("MobileNetV2 at 224x224: where the multiply-adds are")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## 5.2 Parity with torchvision

Because the module names equal torchvision's, the `state_dict`s have the same 314 keys and
shapes, and weights move both ways in one line. We give a torchvision model non-trivial
BatchNorm statistics, copy its weights into ours, and compare the logits in eval mode, then
one training step's loss and gradients in train mode (the classifier's Dropout switched off
on both sides, so their random masks cannot differ).
"""

# %%
torch.manual_seed(0)
tv = torchvision.models.mobilenet_v2(num_classes=10)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
ours = mobilenet_v2(num_classes=10, seed=0)
ours.load_state_dict({k: v.numpy() for k, v in tv.state_dict().items()})
print("state_dict keys equal:", list(ours.state_dict()) == list(tv.state_dict()), f"({len(tv.state_dict())} keys)")

res = 64 if TINYMBV2_FAST else 224
x = np.random.default_rng(0).standard_normal((2, 3, res, res)).astype(np.float32)
with tinymbv2.no_grad():
    y_ours = ours.eval()(Tensor(x)).data
with torch.no_grad():
    y_tv = tv.eval()(torch.from_numpy(x)).numpy()
print(f"eval logits at {res}x{res}: max |ours - torchvision| = {np.abs(y_ours - y_tv).max():.2e} "
      f"(logits up to {np.abs(y_tv).max():.2f})")

# %%
from tinymbv2 import functional as F

# float64 on both sides: in float32 a batch of 2 gives BatchNorms in the last stages only
# 2*2*2 = 8 values per channel, and rounding alone moves some gradients by about 1%.
ours.double(); tv.double()
side = 48 if TINYMBV2_FAST else 64   # 48 px still leaves 2x2 maps (8 values per BN channel) at the end
xs = x[:, :, :side, :side].astype(np.float64)
labels = np.array([3, 7])
ours.train(); ours.classifier[0].eval()
tv.train(); tv.classifier[0].eval()
loss = F.cross_entropy(ours(Tensor(xs)), labels)
ours.zero_grad(); loss.backward()
tv_loss = torch.nn.functional.cross_entropy(tv(torch.from_numpy(xs)), torch.from_numpy(labels))
tv.zero_grad(); tv_loss.backward()
print(f"train-mode loss: ours {loss.item():.12f}  torchvision {tv_loss.item():.12f}")

tv_params = dict(tv.named_parameters())
scale = max(float(p.grad.abs().max()) for p in tv.parameters())
errors, zero = {}, []
for name, p in ours.named_parameters():
    ref = tv_params[name].grad.numpy()
    if np.abs(ref).max() < 1e-12 * scale:
        zero.append(name)          # a gradient that is exactly 0 in exact arithmetic
    else:
        errors[name] = np.abs(p.grad - ref).max() / np.abs(ref).max()
name = max(errors, key=errors.get)
print(f"largest relative gradient error over {len(errors)} parameters: {errors[name]:.1e} ({name})")
print(f"{len(zero)} parameters have a zero gradient on both sides (|grad| < 1e-12 of the largest):",
      ", ".join(zero[:3]), "...")
print("running_mean after the step, max error:",
      np.abs(ours.features[0][1].running_mean.data - tv.features[0][1].running_mean.numpy()).max())

# %% [markdown]
r"""
The parameters with a zero gradient are the biases of the projection BatchNorms. A
constant added to a channel there reaches the next block's expansion (a linear $1\times1$
conv, possibly after a residual add) as a constant per output channel, and the next
BatchNorm (in training mode) subtracts its batch mean: the constant cancels, so the loss does
not depend on that bias at all. The same argument is why every convolution that feeds a
BatchNorm is built with `bias=False`: its bias would be wasted.
"""

# %% [markdown]
r"""
## 5.3 The seed article's network, side by side

The article this course started from builds "MobileNetV2" from one block per row of
Table 2 (7 blocks instead of 17) and says the network has 22 convolutions and 3 fully
connected layers. `seed_article_net()` is that 7-block network, with its other bugs
repaired (each block a real expand / depthwise / linear-project block, one Linear). Every
one of its blocks changes the width or the stride, so it has **no residual connection at
all**: the "residual" in "inverted residual" is gone.
"""

# %%
article = seed_article_net(seed=0)
sa = summary(article, input_size=(3, 224, 224))
rows = [("bottleneck blocks", len(article.blocks), len(model.blocks)),
        ("residual adds", sum(b.use_res_connect for b in article.blocks), sum(b.use_res_connect for b in model.blocks)),
        ("convolutions", sum(isinstance(m, nn.Conv2d) for m in article.modules()), len(convs)),
        ("Linear layers", sum(isinstance(m, nn.Linear) for m in article.modules()), 1),
        ("parameters", sa.total_params, s.total_params),
        ("multiply-adds at 224", sa.total_macs, s.total_macs)]
print(f"{'':24s} {'seed article':>14s} {'MobileNetV2':>14s}")
for name, a, b in rows:
    print(f"{name:24s} {a:14,d} {b:14,d}")

# %% [markdown]
r"""
## 5.4 Reading `model(x)`

The code reads like the paper and like torchvision: a block's forward is its residual
branch, plus its input when the shapes allow it, and the network's forward is features,
pooling, classifier. Step into `model(x)` in a debugger and you follow the batch through
every `Conv2d`, `BatchNorm2d` and `ReLU6`, down to the kernels of chapters 2 and 3:
"""

# %%
import inspect

print(inspect.getsource(InvertedResidual.forward))
print(inspect.getsource(type(model).forward))

# %% [markdown]
r"""
Run that way, every layer reads its input from memory and writes its output back, which is
most of the time a CPU spends on this network. Frameworks fix that with a compiler that fuses
layers; tinymbv2 does it with a pass over the model, `tinymbv2.fuse(model)`, which leaves the
model as it is and returns a fused view of the same layers. Chapter 14 shows what it fuses and
how much it saves. The chapters until then call the model directly, layer by layer, except
that the trainer (`fit` and `evaluate`, from chapter 10 on) runs the fused view by default,
for speed; `fuse=False` makes it step through the plain model.
"""

# %% [markdown]
r"""
## Exercises

**1.** Build `mobilenet_v2(width_mult=0.5)` and compare its parameters and multiply-adds at
224 with torchvision's (REFERENCE: 1,968,680 parameters, 97.1M multiply-adds).

<details><summary>Solution</summary>

```python
s05 = summary(mobilenet_v2(width_mult=0.5, seed=0), input_size=(3, 224, 224))
print(s05.total_params - 1_968_680, s05.total_macs / 1e6)
```

</details>

**2.** Use the cost formula above to compute the multiply-adds of block 2 ($k=16$,
$t=6$, $k'=24$, $s=2$, input $112\times112$) and compare with `summary`.

<details><summary>Solution</summary>

```python
h = w = 112; k, t, kp, st = 16, 6, 24, 2
formula = h * w * t * k * (k + 9 / st**2 + kp / st**2)
from_summary = sum(r.macs for r in s.rows if r.name.startswith("features.2."))
print(formula, from_summary)
```

</details>

**3.** Make a block with `InvertedResidual(24, 24, 1, 6)`, feed it a random input, and verify
that its output minus its input equals `block.conv(x)` (the residual branch).

<details><summary>Solution</summary>

```python
b = InvertedResidual(24, 24, 1, 6).eval()
xb = Tensor(np.random.default_rng(1).standard_normal((1, 24, 8, 8)).astype(np.float32))
with tinymbv2.no_grad():
    print(np.abs(b(xb).data - xb.data - b.conv(xb).data).max())
```

</details>
"""
