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

import tinymbv2
from tinymbv2 import Tensor, nn
from tinymbv2.models import (TABLE2, InvertedResidual, make_divisible, mobilenet_v2,
                             seed_article_net, summary)

print(f"{'t':>3s} {'c':>5s} {'n':>3s} {'s':>3s}   c at width 0.35")
for t, c, n, s in TABLE2:
    print(f"{t:3d} {c:5d} {n:3d} {s:3d}   {make_divisible(c * 0.35):5d}")

# %% [markdown]
r"""
The model code is that table and a loop (see `tinymbv2/models/mobilenetv2.py`): a $3\times3$
stem conv to 32 channels with stride 2, then for every row `n` blocks, the first with stride
`s`, then a $1\times1$ conv to 1280 channels, global average pooling and one Linear layer.
A width multiplier $w$ (the last column: $w = 0.35$) scales every width and rounds it with
`make_divisible` to a multiple of 8, never down by more than 10%: $16 \times 0.35 = 5.6$ becomes
8, and the 1280-channel head is never made narrower.

## 5.1 Counting layers, parameters and multiply-adds against the paper

The paper states 3.4M parameters and 300M multiply-adds (rounded). `summary` computes ours
from the shapes, without running the network; the next cell counts torchvision's by running
its model once, and the two must agree exactly.
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
assert count == expected, count
print(f"{'parameters':28s} {s.total_params:,}   paper: 3.4M")
print(f"{'multiply-adds at 224x224':28s} {s.total_macs:,}   paper: 300M")

# %% [markdown]
r"""
torchvision's numbers, measured: its parameters are counted directly, its multiply-adds by
running one $224\times224$ image through it with a hook on every convolution and the Linear
layer, which adds $C_o H_o W_o \cdot \frac{C_i}{\text{groups}} k_h k_w$ (conv) or
$\text{in}\cdot\text{out}$ (Linear) per image. (PyTorch is imported here, after tinymbv2, and
only for the comparisons.)
"""

# %%
import torch
import torchvision

tv_full = torchvision.models.mobilenet_v2()
tv_macs = []

def count_macs(layer, inputs, out):
    if isinstance(layer, torch.nn.Conv2d):
        kh, kw = layer.kernel_size
        tv_macs.append(out[0].numel() * layer.in_channels // layer.groups * kh * kw)
    else:
        tv_macs.append(layer.in_features * layer.out_features)

for layer in tv_full.modules():
    if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
        layer.register_forward_hook(count_macs)
with torch.no_grad():
    tv_full.eval()(torch.zeros(1, 3, 224, 224))
tv_param_count = sum(p.numel() for p in tv_full.parameters())
print(f"{'':14s} {'tinymbv2':>13s} {'torchvision':>13s}")
print(f"{'parameters':14s} {s.total_params:13,d} {tv_param_count:13,d}")
print(f"{'multiply-adds':14s} {s.total_macs:13,d} {sum(tv_macs):13,d}")
assert (s.total_params, s.total_macs) == (tv_param_count, sum(tv_macs))
print("equal: checked")

# %% [markdown]
r"""
Where does the compute go? Per block, split into the $1\times1$ (pointwise) and depthwise
parts. The pointwise convolutions carry about 90% of the multiply-adds (the cell prints the
share): that is why the speed of a matrix product decides MobileNetV2's speed.
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
print("multiply-adds by kind:", {k: f"{v / 1e6:.1f}M" for k, v in s.macs_by_kind.items()})
pointwise_share = s.macs_by_kind["pointwise"] / s.total_macs
print(f"pointwise share: {pointwise_share:.1%}")
assert 0.85 < pointwise_share < 0.95

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
assert list(ours.state_dict()) == list(tv.state_dict())
print(f"state_dict keys equal: checked ({len(tv.state_dict())} keys)")

res = 64 if TINYMBV2_FAST else 224
x = np.random.default_rng(0).standard_normal((2, 3, res, res)).astype(np.float32)
with tinymbv2.no_grad():
    y_ours = ours.eval()(Tensor(x)).data
with torch.no_grad():
    y_tv = tv.eval()(torch.from_numpy(x)).numpy()
eval_error = np.abs(y_ours - y_tv).max()
print(f"eval logits at {res}x{res}: max |ours - torchvision| = {eval_error:.2e} "
      f"(logits up to {np.abs(y_tv).max():.2f})")
assert eval_error < 1e-4 * max(1.0, np.abs(y_tv).max())   # float32 rounding, no more

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
assert abs(loss.item() - tv_loss.item()) < 1e-10 and errors[name] < 1e-8
projection_bn_biases = {f"features.{i}.conv.{2 if i == 1 else 3}.bias" for i in range(1, 18)}
assert set(zero) == projection_bn_biases, sorted(set(zero) ^ projection_bn_biases)
print(f"the zero gradients are exactly the {len(projection_bn_biases)} projection BatchNorms' biases: checked")

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
assert len(article.blocks) == 7 and not any(b.use_res_connect for b in article.blocks)

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

Each exercise gives a function to write and a check that runs it on cases you do not see: it
prints `correct` or `not yet:` with a hint naming the case that fails.

### Exercise 5.1

Write the channel plan of the network: for a width multiplier `width_mult`, the
`(inp, oup, stride, t)` of each of the 17 inverted residual blocks, in order, from the rows
$(t, c, n, s)$ of `TABLE2`. Every width is rounded with `make_divisible(c * width_mult)`, the
first block reads the stem's `make_divisible(32 * width_mult)` channels, and each block reads
what the previous one wrote. The check compares your plan with the model's blocks at five
widths.
"""

# %%
from tinymbv2.exercises import check_block_plan

def block_plan(width_mult):
    """The 17 blocks of MobileNetV2 at width_mult, as a list of (inp, oup, stride, t):
    input channels, output channels, stride, expansion factor."""
    raise NotImplementedError("your code here")

check_block_plan(block_plan)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def block_plan(width_mult):
    plan, inp = [], make_divisible(32 * width_mult)
    for t, c, n, s in TABLE2:
        oup = make_divisible(c * width_mult)
        for i in range(n):
            plan.append((inp, oup, s if i == 0 else 1, t))
            inp = oup
    return plan
```

Only the first repeat of a row changes the stride (and the width); the others keep both, and
those are exactly the blocks with a residual add. Written this way, `len(block_plan(1.0))` is
17, and `sum(inp == oup and s == 1 for inp, oup, s, t in block_plan(1.0))` is 10.

</details>

### Exercise 5.2

Follow an image through the network: write `feature_sizes(image_size, small_input)`, the side
of the (square) feature map after each of the 19 stages of `model.features`: the stem, the 17
blocks, the head. A $3\times3$ conv with padding 1 and stride 2 turns $h$ rows into
$\lceil h/2 \rceil$ (so 97 becomes 49, not 48); $1\times1$ convs and stride 1 keep the size.
The variant for 28-32 px images, `small_input=True`, gives the stem and the first block of
row 2 of `TABLE2` stride 1, so a 32 px image ends at $4\times4$ instead of $1\times1$.
"""

# %%
from tinymbv2.exercises import check_feature_sizes

def feature_sizes(image_size, small_input=False):
    """The side of the feature map after each stage of model.features (19 ints)."""
    raise NotImplementedError("your code here")

check_feature_sizes(feature_sizes)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def feature_sizes(image_size, small_input=False):
    size = -(-image_size // (1 if small_input else 2))   # the stem: ceil(h / stride)
    sizes = [size]
    for row, (t, c, n, s) in enumerate(TABLE2):
        if small_input and row == 1:
            s = 1
        for i in range(n):
            size = -(-size // (s if i == 0 else 1))
            sizes.append(size)
    return sizes + [size]                                 # the 1x1 head keeps the size
```

Five stride-2 stages divide the side by $2^5 = 32$: $224$ px ends at $7\times7$, the map
the paper's average pooling reads. A 28 px image goes 14, 7, 4, 2, 1: from block 14 on,
every $3\times3$ filter sees one pixel and its zero padding. Keeping the first two stages at
full resolution (28, 28, 14, 7, 4) is what makes the small-input variant work on
MNIST-sized images.

</details>

### Exercise 5.3

Count the trainable parameters of `InvertedResidual(inp, oup, stride, t)` (the stride does
not change them). Look at the block's layers (`print(InvertedResidual(16, 24, 2, 6))`): which
have weights, which have biases, and what of a BatchNorm is trained?
"""

# %%
from tinymbv2.exercises import check_block_params

def block_params(inp, oup, t):
    """Trainable parameters of InvertedResidual(inp, oup, stride, t)."""
    raise NotImplementedError("your code here")

check_block_params(block_params)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def block_params(inp, oup, t):
    hidden = round(inp * t)
    expand = inp * hidden + 2 * hidden if t != 1 else 0   # 1x1 conv (no bias) + BN gamma, beta
    depthwise = 9 * hidden + 2 * hidden                  # one 3x3 filter per channel + BN
    project = hidden * oup + 2 * oup                     # 1x1 conv + BN
    return expand + depthwise + project
```

A BatchNorm trains its scale $\gamma$ and shift $\beta$; its running mean and variance are
buffers, updated by the forward pass, not by the optimizer. The convolutions have no bias:
the BatchNorm that follows each one has its own $\beta$.

</details>
"""
