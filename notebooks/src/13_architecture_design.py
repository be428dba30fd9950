# %% [markdown]
r"""
# 13. Architecture design: width and resolution

MobileNetV2 has two knobs to trade accuracy for cost (paper section 6.1, Figure 5):

* the **width multiplier** $w$ scales the channels of every layer (rounded to a multiple of
  8; the final 1280 channels are only ever scaled up). Since a $1\times1$ convolution costs
  $C_i C_o$ per pixel, the multiply-adds fall roughly as $w^2$, and so do the parameters;
* the **input resolution** $r$ scales every feature map: multiply-adds fall as $r^2$, the
  parameters do not change at all.

$$
\text{MACs}(w, r) \approx w^2 \left(\frac{r}{224}\right)^2 \cdot 300\text{M}, \qquad
\text{params}(w) \approx w^2 \cdot 3.4\text{M} \;\;(\text{plus the head, which does not shrink}).
$$

The paper's family spans 1.4/224 (582M MACs, 74.7% on ImageNet) down to 0.35/96 (12M MACs).
Section 13.3 then trains the paper's ablations of the block itself (its Figure 6): the
linear bottleneck, and where the shortcut sits.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import time
import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import optim
from tinymbv2.data import DataLoader, Normalize, Resize, Split, load_dataset
from tinymbv2.models import mobilenet_v2, summary
from tinymbv2.evaluation import evaluate
from tinymbv2.train import fit

# %% [markdown]
r"""
## 13.1 The multiply-add table, against torchvision's numbers

The table below is what `summary` computes for each width and resolution (1000 classes).
The dictionaries `reference` and `params_ref` in the cell hold the same numbers measured on
torchvision's `mobilenet_v2` (torchvision 0.29, multiply-adds of the convolutions and the
Linear layer, rounded to 0.1M); the cell checks every entry against them: the parameter counts
must agree exactly, the multiply-adds within the rounding.
"""

# %%
reference = {  # millions of multiply-adds, torchvision mobilenet_v2 (conv + linear)
    1.4: [582.2, 428.2, 297.9, 191.3, 108.4], 1.0: [300.8, 221.3, 154.1, 99.1, 56.3],
    0.75: [209.1, 153.9, 107.3, 69.1, 39.4], 0.5: [97.1, 71.7, 50.2, 32.6, 18.9],
    0.35: [59.3, 43.9, 30.9, 20.2, 11.9],
}
params_ref = {1.4: 6_108_776, 1.0: 3_504_872, 0.75: 2_636_424, 0.5: 1_968_680, 0.35: 1_677_128}
resolutions = [224, 192, 160, 128, 96]
ours, ours_params = {}, {}
print(f"{'width':>6s} {'params':>11s} {'(ref diff)':>10s} " + " ".join(f"{r:>7d}" for r in resolutions))
worst = 0.0
for w, ref_row in reference.items():
    model = mobilenet_v2(width_mult=w, seed=0)
    row = [summary(model, input_size=(3, r, r)).total_macs / 1e6 for r in resolutions]
    ours[w] = row
    worst = max(worst, max(abs(a - b) for a, b in zip(row, ref_row)))
    n = ours_params[w] = sum(int(p.size) for p in model.parameters())
    print(f"{w:6.2f} {n:11,d} {n - params_ref[w]:10d} " + " ".join(f"{m:7.1f}" for m in row))
print(f"largest difference to torchvision's table: {worst:.3f}M (it is rounded to 0.1M)")
assert worst <= 0.05 + 1e-9 and all(ours_params[w] == params_ref[w] for w in params_ref)
print("checked: every parameter count equals torchvision's; every multiply-add count is within its rounding")
print(f"width 0.35 at 224: {ours[0.35][0]:.1f}M multiply-adds, while 0.35^2 x width 1.0's "
      f"{ours[1.0][0]:.1f}M = {0.35 ** 2 * ours[1.0][0]:.1f}M")
assert ours[0.35][0] > 1.5 * 0.35 ** 2 * ours[1.0][0]

fig, ax = plt.subplots(figsize=(7, 4))
for w, row in ours.items():
    ax.plot(resolutions, row, "o-", label=f"width {w}")
ax.set_yscale("log"); ax.set_xlabel("input resolution"); ax.set_ylabel("million multiply-adds (log)")
ax.grid(alpha=0.3, which="both"); ax.legend(); ax.set_title("MobileNetV2: cost by width and resolution")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
Note the width 0.35 row, and the last line the cell printed: at 224 it costs far more than
$0.35^2$ of width 1.0 (the cell asserts over 1.5 times as much). The 1280-channel head does
not shrink with the width and the rounding to multiples of 8 keeps the thinnest layers at 8
or 16 channels, so at small widths the fixed parts dominate.

## 13.2 Accuracy against cost on mnist5k

The same trade-off on our small problem: a few (width, resolution) pairs trained with the same
budget, with the digits resized to $r \times r$. Each point's cost is its multiply-adds per
image; we also measure the forward time per image.
"""

# %%
ds = load_dataset("mnist5k")
n_train = 384 if TINYMBV2_FAST else 2000
epochs = 2 if TINYMBV2_FAST else 3
pairs = [(0.35, 14), (0.35, 28)] if TINYMBV2_FAST else [(0.25, 14), (0.5, 14), (0.25, 28), (0.5, 28)]
subset = np.random.default_rng(0).permutation(len(ds.train))[:n_train]
keep = np.linspace(0, len(ds.val) - 1, 200 if TINYMBV2_FAST else len(ds.val)).astype(int)  # every class

from tinymbv2.train import recalibrate_batchnorm  # one training-mode pass, cumulative BN averages

def ms_per_image(model, images, repeat=3):
    """Forward time per image in eval mode: the median of `repeat` passes after a warm-up pass."""
    evaluate(model, images[:64], np.zeros(min(64, len(images)), dtype=np.int64))   # warm-up (compiles)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); evaluate(model, images, np.zeros(len(images), dtype=np.int64))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / len(images) * 1e3

points = []
for width, res in pairs:
    tr = Resize(res)(ds.train.images[subset])
    norm = Normalize.from_data(tr)
    val = Split(norm(Resize(res)(ds.val.images[keep])), ds.val.labels[keep])
    tinymbv2.manual_seed(0)
    model = mobilenet_v2(width_mult=width, num_classes=10, in_channels=1, small_input=True, seed=0)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    fit(model, opt, DataLoader(norm(tr), ds.train.labels[subset], 32, seed=0),
        epochs=epochs, scheduler=sched, progress=False, log=None)
    recalibrate_batchnorm(model, norm(tr))                  # precise BatchNorm statistics
    val_acc = evaluate(model, val.images, val.labels)["accuracy"]
    macs = summary(model, input_size=(1, res, res)).total_macs
    ms = ms_per_image(model, val.images[:256])
    points.append((width, res, macs, val_acc, ms))
    print(f"width {width:4.2f}, {res:2d}x{res:<2d}: {macs / 1e6:6.2f}M MACs, {ms:5.2f} ms/image, "
          f"validation accuracy {val_acc:.1%}")

fig, ax = plt.subplots(figsize=(7, 4))
for width in sorted({p[0] for p in points}):
    sel = [p for p in points if p[0] == width]
    ax.plot([p[2] / 1e6 for p in sel], [p[3] for p in sel], "o-", label=f"width {width}")
    for p in sel:
        ax.annotate(f"{p[1]}px", (p[2] / 1e6, p[3]), textcoords="offset points", xytext=(4, -10), fontsize=8)
ax.set_xscale("log"); ax.set_xlabel("million multiply-adds per image (log)"); ax.set_ylabel("validation accuracy")
ax.grid(alpha=0.3); ax.legend(); ax.set_title(f"mnist5k, {n_train} training images, {epochs} epochs")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
Two things to read off the points, which the next cell prints and, at full size, checks.
On a problem this small both knobs can be turned far down and the network still learns the
digits: the cheapest network costs about a tenth of the largest one's multiply-adds and loses
only a few points to it. And multiply-adds are only a proxy for time: small layers are dominated by per-layer
overhead (a Python call, a kernel launch, a pass over memory), so the measured milliseconds
shrink less than the multiply-adds do. (On ImageNet the paper finds that, for a given budget of
multiply-adds, the widths and resolutions in the middle of the family give the best accuracy.)
"""

# %%
cheap, dear = min(points, key=lambda p: p[2]), max(points, key=lambda p: p[2])
best = max(points, key=lambda p: p[3])
print(f"cheapest: width {cheap[0]}, {cheap[1]} px, {cheap[2] / 1e6:.2f}M MACs, accuracy {cheap[3]:.1%}; "
      f"best: width {best[0]}, {best[1]} px, accuracy {best[3]:.1%}")
print(f"largest / cheapest: {dear[2] / cheap[2]:.1f}x the multiply-adds, {dear[4] / cheap[4]:.1f}x the time")
if not TINYMBV2_FAST:
    assert dear[2] / cheap[2] > 8 and cheap[3] > 0.85 and best[3] - cheap[3] < 0.10, (cheap, best)
    assert dear[4] / cheap[4] < dear[2] / cheap[2], (dear, cheap)
    print("checked: the cheapest network, at under an eighth of the largest's multiply-adds, is "
          "above 85% and within 10 points of the best; the time grows less than the multiply-adds")

# %% [markdown]
r"""
## 13.3 The paper's Figure 6, trained: linear bottlenecks and where the shortcut sits

Besides width and resolution, the paper tests two design choices of the block itself
(section 6.4, Figure 6): (a) the **linear bottleneck** against a ReLU6 after the projection,
and (b) the **shortcut between the bottlenecks** (the thin tensors, the paper's choice)
against a shortcut between the expansions (the wide $t k$-channel tensors of consecutive
blocks) and against no shortcut. On ImageNet the linear bottleneck and the shortcut between
bottlenecks win. The ablations are arguments of the library's model, not copies of it:
`mobilenet_v2(..., bottleneck_activation="relu6")`, `mobilenet_v2(..., shortcut="expansion")`,
`mobilenet_v2(..., shortcut="none")`. None of them adds or removes a parameter (a ReLU6 and an
add have none), so every variant is the same network size; the cell prints the counts.

They sit here, in the design chapter, rather than beside the block in chapters 4 and 5,
because comparing them needs the training loop of chapter 10 and the small-budget setup of
13.2. Each variant is trained with the same recipe (SGD with momentum, cosine schedule) from
three seeds, on a small subset of mnist5k at 14 px and width 0.25, a setting where one
run takes seconds and the networks are still far from the ceiling, so differences can show.
The plot shows the mean validation accuracy per epoch with a band of one standard deviation.
"""

# %%
n_abl = 256 if TINYMBV2_FAST else 1000
abl_epochs = 2 if TINYMBV2_FAST else 5
abl_res, abl_width, seeds = 14, 0.25, [0, 1, 2]
abl_subset = np.random.default_rng(1).permutation(len(ds.train))[:n_abl]
abl_train = Resize(abl_res)(ds.train.images[abl_subset])
abl_norm = Normalize.from_data(abl_train)
val_keep = np.linspace(0, len(ds.val) - 1, 200 if TINYMBV2_FAST else 1000).astype(int)
abl_val = Split(abl_norm(Resize(abl_res)(ds.val.images[val_keep])), ds.val.labels[val_keep])
variants = {
    "linear bottleneck, shortcut between bottlenecks (paper)": {},
    "ReLU6 in the bottleneck": dict(bottleneck_activation="relu6"),
    "shortcut between expansions": dict(shortcut="expansion"),
    "no shortcut": dict(shortcut="none"),
}
curves, n_params = {}, {}
t_start = time.perf_counter()
for name, ablation in variants.items():
    curves[name] = []
    for seed in seeds:
        tinymbv2.manual_seed(seed)
        model = mobilenet_v2(width_mult=abl_width, num_classes=10, in_channels=1,
                             small_input=True, seed=seed, **ablation)
        n_params[name] = sum(int(p.size) for p in model.parameters())
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
        sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=abl_epochs)
        history = fit(model, opt, DataLoader(abl_norm(abl_train), ds.train.labels[abl_subset], 32,
                                             seed=seed),
                      val_split=abl_val, epochs=abl_epochs, scheduler=sched, progress=False, log=None)
        curves[name].append(history["val_acc"])
    final = np.array([c[-1] for c in curves[name]])
    print(f"{name:56s} {n_params[name]:,d} parameters; final validation accuracy "
          f"{final.mean():.1%} ± {final.std(ddof=1):.1%} over {len(seeds)} seeds "
          f"({', '.join(f'{a:.1%}' for a in final)})")
print(f"{len(variants) * len(seeds)} runs in {time.perf_counter() - t_start:.0f} s")
assert len(set(n_params.values())) == 1  # the same network size, as the paper compares them

fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
groups = [list(variants)[:2], [list(variants)[0]] + list(variants)[2:]]
for ax, names, title in zip(axes, groups, ["(a) the bottleneck's activation", "(b) the shortcut"]):
    for name in names:
        c = np.array(curves[name])
        epochs_axis = np.arange(1, c.shape[1] + 1)
        ax.plot(epochs_axis, c.mean(0), "o-", label=name)
        ax.fill_between(epochs_axis, c.mean(0) - c.std(0, ddof=1), c.mean(0) + c.std(0, ddof=1), alpha=0.2)
    ax.set_xlabel("epoch"); ax.set_title(title); ax.grid(alpha=0.3); ax.legend(fontsize=8)
axes[0].set_ylabel("validation accuracy (mean ± std, 3 seeds)")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
What the runs show, which the next cell prints and, at full size, checks. (a) The ReLU6 in
the bottleneck costs accuracy, as section 3.2 predicts: a ReLU6 on the thin projection
throws away the negative half of a low-dimensional tensor, and at this width (8 to 80
channels in the bottlenecks) that is most of what the block has to pass on. (b) Without a
shortcut the 17-block network trains much more slowly with this budget; with the shortcut
between bottlenecks it trains fastest and most evenly across seeds. The shortcut between the
expansions lands in between on the mean, with a much wider spread: some seeds match the
paper's block and others fall behind. Three seeds at this scale show the direction of the
paper's Figure 6b but cannot measure the size of that gap; the linear bottleneck and the
shortcut's presence are the clear effects.
"""

# %%
mean = {name: float(np.mean([c[-1] for c in curves[name]])) for name in variants}
std = {name: float(np.std([c[-1] for c in curves[name]], ddof=1)) for name in variants}
paper, relu6, expansion, none = variants
print(f"(a) linear minus ReLU6 bottleneck: {mean[paper] - mean[relu6]:+.1%} (mean of the final accuracies)")
print(f"(b) shortcut between bottlenecks minus none: {mean[paper] - mean[none]:+.1%}; "
      f"minus between expansions: {mean[paper] - mean[expansion]:+.1%} "
      f"(standard deviations {std[paper]:.1%} and {std[expansion]:.1%})")
if not TINYMBV2_FAST:
    assert mean[paper] - mean[relu6] > 0.05, mean
    assert mean[paper] - mean[none] > 0.15, mean
    assert mean[none] < mean[expansion] < mean[paper] and std[expansion] > std[paper], (mean, std)
    print("checked: the linear bottleneck beats the ReLU6 one by over 5 points; the shortcut "
          "between bottlenecks beats none by over 15 points; between expansions lies between "
          "them on the mean, with a wider spread over seeds")

# %% [markdown]
r"""
## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see: it
prints `correct` or `not yet:` with a hint naming the case that fails.

### Exercise 13.1

Every width in the network goes through one rounding rule (torchvision's, from TF-slim):
round `v` channels to the nearest multiple of `divisor`, halves up; never fewer than `divisor`;
and if that rounding lost more than 10% of `v`, add one `divisor`. Write it. (Which stem width
does `32 * 0.35 = 11.2` give, and why not 8?)
"""

# %%
from tinymbv2.exercises import check_make_divisible

def make_divisible(v, divisor=8):
    """v channels (a float) rounded to a multiple of divisor, as torchvision does; an int."""
    raise NotImplementedError("your code here")

check_make_divisible(make_divisible)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:          # rounding down lost more than 10%
        new_v += divisor
    return new_v
```

11.2 rounds to 8, which loses 29% of the channels, so the stem of width 0.35 gets 16.
`int(v + divisor / 2)` rounds halves up; Python's `round` rounds them to the even neighbour
(`round(6.5) == 6`), which for 52 channels gives 48 instead of 56.

</details>

### Exercise 13.2

Count the multiply-adds of one inverted residual block (chapter 4) on an $h \times w$ input
with `c_in` channels: a $1\times1$ expansion to `hidden = round(c_in * t)` channels (absent when
$t = 1$), a $3\times3$ depthwise convolution with padding 1 and the block's stride, and a
$1\times1$ projection to `c_out`. Only convolutions count (BatchNorm and ReLU6 are not
multiply-adds). The check compares with `summary` on the library's block.
"""

# %%
from tinymbv2.exercises import check_block_macs

def block_macs(c_in, c_out, t, stride, h, w):
    """Multiply-adds (an int) of InvertedResidual(c_in, c_out, stride, t) on one c_in x h x w input."""
    raise NotImplementedError("your code here")

check_block_macs(block_macs)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def block_macs(c_in, c_out, t, stride, h, w):
    hidden = round(c_in * t)
    ho, wo = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1   # chapter 2's formula
    expand = h * w * c_in * hidden if t != 1 else 0                  # at the input resolution
    depthwise = ho * wo * hidden * 9                                 # one 3x3 filter per channel
    project = ho * wo * hidden * c_out
    return expand + depthwise + project
```

At stride 1 this is the paper's $h \cdot w \cdot c_\text{in} t\,(c_\text{in} + 9 + c_\text{out})$:
the two $1\times1$ convolutions dominate, which is why the multiply-adds scale with the square of
the width, and every term scales with $h w$, the square of the resolution.

</details>

### Exercise 13.3

Write `head_fraction(width_mult, num_classes)`: the fraction of all the parameters of
`mobilenet_v2(width_mult, num_classes)` that sit in its head, `features[18]` (the $1\times1$
conv to 1280 channels and its BatchNorm) and `classifier`. Build the model and count. How large
is it for width 0.35 with 1000 classes, and what does that say about shrinking the width?
"""

# %%
from tinymbv2.exercises import check_head_fraction

def head_fraction(width_mult, num_classes):
    """(parameters of features[18] and classifier) / (all parameters), a float in (0, 1)."""
    raise NotImplementedError("your code here")

check_head_fraction(head_fraction)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def head_fraction(width_mult, num_classes):
    model = mobilenet_v2(width_mult=width_mult, num_classes=num_classes)
    count = lambda module: sum(int(p.size) for p in module.parameters())
    return (count(model.features[18]) + count(model.classifier)) / count(model)

for w, k in ((0.35, 1000), (1.0, 1000), (0.35, 10), (1.0, 10)):
    print(f"width {w}, {k} classes: {head_fraction(w, k):.0%} of the parameters in the head")
```

At width 0.35 with 1000 classes it is 85%: the 1280 x 1000 classifier alone holds 1.28M of
the 1.68M parameters. Even with 10 classes, as on our digits, the head's $1\times1$ conv to
1280 channels keeps it at 39% at width 0.35, twice its share at width 1.0. The head does not
shrink with the width, so below width 1 the parameter count falls far slower than $w^2$.

</details>
"""
