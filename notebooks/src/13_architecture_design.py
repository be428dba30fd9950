# %% [markdown]
r"""
# 13. Architecture design: width, resolution and the block

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
Section 13.3 adds the block's own knob, the expansion ratio $t$, and 13.4 trains the paper's
ablations of the block (its Figure 6): the linear bottleneck, and where the shortcut sits.
"""

# %%
import functools
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import time
import numpy as np
import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter

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

The same trade-off on our small problem: two widths and two resolutions, trained with the same
recipe and budget, with the digits resized to $r \times r$. One setup serves this section and
the next two: 1,000 training images of mnist5k, 1,000 validation images, five epochs of SGD
with momentum and a cosine schedule, every configuration from three seeds (initial weights
and batch order). A run of width 0.25 takes seconds, and the networks are still far from the
ceiling, so differences between configurations can show. `train_run` trains each
configuration once; the sections after this one reuse its runs where a configuration comes
back (width 0.25 at 14 px with Table 2's $t = 6$ is the paper's network in both). Each point is the mean validation
accuracy of the three seeds, with their standard deviation as an error bar; its cost is its
multiply-adds per image, and we also measure its forward time per image.
"""

# %%
ds = load_dataset("mnist5k")
n_train = 256 if TINYMBV2_FAST else 1000
epochs = 2 if TINYMBV2_FAST else 5
seeds = [0, 1, 2]
widths, sizes = [0.25, 0.5], [10, 14]
subset = np.random.default_rng(1).permutation(len(ds.train))[:n_train]
val_keep = np.linspace(0, len(ds.val) - 1, 200 if TINYMBV2_FAST else 1000).astype(int)  # every class

@functools.cache
def data_at(res):
    """The training subset (normalised) and the validation Split, both resized to res x res."""
    train = Resize(res)(ds.train.images[subset])
    norm = Normalize.from_data(train)
    return norm(train), Split(norm(Resize(res)(ds.val.images[val_keep])), ds.val.labels[val_keep])

runs = {}  # (width, res, seed, t, ablation) -> {"model", "curve"}: each configuration trained once

def train_run(width, res, seed, t=6, **ablation):
    """One run of the recipe; "curve" is the validation accuracy after each epoch."""
    key = (width, res, seed, t, tuple(sorted(ablation.items())))
    if key not in runs:
        train_images, val = data_at(res)
        tinymbv2.manual_seed(seed)
        model = mobilenet_v2(width_mult=width, num_classes=10, in_channels=1, small_input=True,
                             seed=seed, expand_ratio=t, **ablation)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
        sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        history = fit(model, opt, DataLoader(train_images, ds.train.labels[subset], 32, seed=seed),
                      val_split=val, epochs=epochs, scheduler=sched, progress=False, log=None)
        runs[key] = {"model": model, "curve": history["val_acc"]}
    return runs[key]

def point(width, res, t=6):
    """A configuration over the seeds: final validation accuracies, their mean and std, and its cost."""
    finals = np.array([train_run(width, res, seed, t)["curve"][-1] for seed in seeds])
    model = train_run(width, res, seeds[0], t)["model"]        # the cost does not depend on the seed
    return dict(width=width, res=res, t=t, finals=finals, mean=finals.mean(), std=finals.std(ddof=1),
                macs=summary(model, input_size=(1, res, res)).total_macs,
                params=sum(int(p.size) for p in model.parameters()), model=model)

def time_points(pts, rounds=7):
    """Sets each point's "ms": forward time per image in eval mode on 256 validation images, the
    fastest of `rounds` passes. The models take turns, so a moment when other programs load
    the machine slows one pass of each model rather than every pass of one."""
    batches = [data_at(p["res"])[1].images[:256] for p in pts]
    times = np.full((rounds, len(pts)), np.inf)
    for r in range(-1, rounds):                                  # round -1: warm-up (compiles)
        for i, (p, images) in enumerate(zip(pts, batches)):
            t0 = time.perf_counter()
            evaluate(p["model"], images, np.zeros(len(images), dtype=np.int64))
            if r >= 0:
                times[r, i] = time.perf_counter() - t0
    for p, seconds in zip(pts, times.min(0)):
        p["ms"] = seconds / 256 * 1e3

t_start = time.perf_counter()
points = [point(width, res) for width in widths for res in sizes]
time_points(points)
for p in points:
    print(f"width {p['width']:4.2f}, {p['res']:2d}x{p['res']:<2d}: {p['macs'] / 1e6:5.2f}M MACs, "
          f"{p['ms']:5.2f} ms/image, validation accuracy {p['mean']:.1%} ± {p['std']:.1%} "
          f"({', '.join(f'{a:.1%}' for a in p['finals'])})")
print(f"{len(runs)} runs in {time.perf_counter() - t_start:.0f} s")

def plot_points(ax, pts, label_fmt, **style):
    """Mean accuracy against multiply-adds, one error bar (the std over the seeds) per point."""
    ax.errorbar([p["macs"] / 1e6 for p in pts], [p["mean"] for p in pts], yerr=[p["std"] for p in pts],
                capsize=3, label=label_fmt, **style)

fig, ax = plt.subplots(figsize=(7, 4))
for width in widths:
    sel = [p for p in points if p["width"] == width]
    plot_points(ax, sel, f"width {width}", fmt="o-")
    for p in sel:
        ax.annotate(f"{p['res']}px", (p["macs"] / 1e6, p["mean"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=8)
ax.set_xscale("log"); ax.set_xlabel("million multiply-adds per image (log)")
for axis_format in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
    axis_format(FormatStrFormatter("%g"))                 # 2, 3, 4 rather than 2x10^0
ax.set_ylabel(f"validation accuracy (mean ± std, {len(seeds)} seeds)")
ax.grid(alpha=0.3); ax.legend(); ax.set_title(f"mnist5k, {n_train} training images, {epochs} epochs")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
Three things to read off the points, which the next cell prints and, at full size, checks.
With this budget the resolution is the better buy: going from 10 to 14 px gains more at
either width than doubling the width gains at either resolution, so width 0.25 at 14 px beats
width 0.5 at 10 px with half its multiply-adds. (A 10 px digit has lost strokes that no
number of channels brings back.) The cheapest network still learns the digits, at about a
quarter of the largest's multiply-adds, but here it pays over ten points for it. And
multiply-adds are only a proxy for time: each layer also pays a fixed cost per call (a Python
call, a kernel launch, a pass over memory) that its multiply-adds do not count, and the time
depends on the machine and on what else runs on it; the last line the cell prints compares
the two ratios for this run, and nothing is asserted about it. (On ImageNet the paper finds that, for a given budget of
multiply-adds, the widths and resolutions in the middle of the family give the best
accuracy.)
"""

# %%
acc = {(p["width"], p["res"]): p for p in points}
res_gain = {w: acc[w, 14]["mean"] - acc[w, 10]["mean"] for w in widths}     # 10 -> 14 px
width_gain = {r: acc[0.5, r]["mean"] - acc[0.25, r]["mean"] for r in sizes}  # width 0.25 -> 0.5
print("10 -> 14 px: " + ", ".join(f"{g:+.1%} at width {w}" for w, g in res_gain.items())
      + "; width 0.25 -> 0.5: " + ", ".join(f"{g:+.1%} at {r} px" for r, g in width_gain.items()))
thin_sharp, wide_coarse = acc[0.25, 14], acc[0.5, 10]
print(f"width 0.25 at 14 px: {thin_sharp['mean']:.1%} with {thin_sharp['macs'] / 1e6:.2f}M MACs; "
      f"width 0.5 at 10 px: {wide_coarse['mean']:.1%} with {wide_coarse['macs'] / 1e6:.2f}M")
cheap, dear = min(points, key=lambda p: p["macs"]), max(points, key=lambda p: p["macs"])
best = max(points, key=lambda p: p["mean"])
print(f"cheapest: width {cheap['width']}, {cheap['res']} px, {cheap['macs'] / 1e6:.2f}M MACs, "
      f"accuracy {cheap['mean']:.1%}; best: width {best['width']}, {best['res']} px, {best['mean']:.1%}")
print(f"largest / cheapest: {dear['macs'] / cheap['macs']:.1f}x the multiply-adds, "
      f"{dear['ms'] / cheap['ms']:.1f}x the time")
if not TINYMBV2_FAST:
    assert min(res_gain.values()) > max(width_gain.values()), (res_gain, width_gain)
    assert thin_sharp["mean"] > wide_coarse["mean"] and thin_sharp["macs"] < 0.5 * wide_coarse["macs"]
    assert dear["macs"] / cheap["macs"] > 4 and cheap["mean"] > 0.7 and best["mean"] - cheap["mean"] > 0.10, (cheap, best)
    print("checked: 10 -> 14 px gains more at each width than 0.25 -> 0.5 at each resolution; width "
          "0.25 at 14 px beats width 0.5 at 10 px with under half its multiply-adds; the cheapest "
          "network, at under a quarter of the largest's multiply-adds, is above 70% and over 10 "
          "points below the best")

# %% [markdown]
r"""
## 13.3 The expansion ratio t

The third knob of the block is its expansion ratio $t$ (Table 1): an inverted residual
block takes $k$ channels, expands them to $t k$ with a $1\times1$ convolution, filters those
$t k$ channels with its $3\times3$ depthwise convolution and projects back down to $k'$. The
bottlenecks stay thin; $t$ sets how wide the space is in which the block does its spatial
work and applies its ReLU6s (section 3.2: the wider that space, the less a ReLU loses). The
paper uses $t = 6$ in every block but the first and notes (section 4) that rates between 5
and 10 give nearly the same results, smaller networks preferring slightly smaller ones.

Every weight of the block's three convolutions touches the $t k$ hidden channels, so at stride
1 on $h \times w$ maps the block has $k t (k + 9 + k')$ weights and costs
$h w \cdot k t (k + 9 + k')$ multiply-adds: both grow linearly in $t$. The whole network adds
a part that does not depend on $t$ (stem, first block, head, classifier), so from $t = 2$ on its
cost is a straight line in $t$ that does not pass through zero (at $t = 1$ the blocks have no
expansion layer at all, which puts that point below the line). `mobilenet_v2(expand_ratio=t)` sets
$t$ for blocks 2 to 17 (the first keeps Table 2's $t = 1$: its input, the stem's 32 channels,
is already twice as wide as its 16 outputs). Below, $t \in \{1, 2, 3, 4, 6\}$ at width 0.25 and
14 px, in the setup of 13.2; $t = 6$ is Table 2's network, whose three runs 13.2 already made.
"""

# %%
t_values = [1, 2, 3, 4, 6]
n_before, t_start = len(runs), time.perf_counter()
t_points = [point(0.25, 14, t) for t in t_values]
time_points(t_points)
print(f"{len(runs) - n_before} new runs in {time.perf_counter() - t_start:.0f} s (t = 6 reuses 13.2's)")
print(f"{'t':>2s} {'params':>9s} {'MACs':>7s} {'ms/image':>9s}  validation accuracy")
for p in t_points:
    print(f"{p['t']:2d} {p['params']:9,d} {p['macs'] / 1e6:6.2f}M {p['ms']:9.3f}  {p['mean']:.1%} ± {p['std']:.1%} "
          f"({', '.join(f'{a:.1%}' for a in p['finals'])})")
by_t = {p["t"]: p for p in t_points}
per_t = [(by_t[t]["macs"] - by_t[2]["macs"]) / (t - 2) for t in t_values if t > 2]
print(f"each step of t from 2 on adds {per_t[0] / 1e6:.3f}M multiply-adds "
      f"(the same for every step: {np.allclose(per_t, per_t[0])}); "
      f"t = 6 costs {by_t[6]['macs'] / by_t[1]['macs']:.1f}x the multiply-adds of t = 1, "
      f"{by_t[6]['params'] / by_t[1]['params']:.1f}x the parameters, {by_t[6]['ms'] / by_t[1]['ms']:.1f}x the time")
assert np.allclose(per_t, per_t[0]) and by_t[1]["macs"] < by_t[2]["macs"] - per_t[0]
assert by_t[6]["macs"] > 3 * by_t[1]["macs"] and by_t[6]["params"] < 2 * by_t[1]["params"]
print("checked: t = 6 costs over 3x the multiply-adds of t = 1 and under 2x its parameters")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ax = axes[0]
plot_points(ax, t_points, "expansion t (width 0.25, 14 px)", fmt="s-", color="black")
for p in t_points:
    ax.annotate(f"t={p['t']}", (p["macs"] / 1e6, p["mean"]), textcoords="offset points", xytext=(4, 6), fontsize=8)
for width in widths:
    plot_points(ax, [p for p in points if p["width"] == width], f"width {width} (14 and 10 px, t=6)",
                fmt="o--", alpha=0.6)
ax.set_xscale("log"); ax.set_xlabel("million multiply-adds per image (log)")
for axis_format in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
    axis_format(FormatStrFormatter("%g"))
ax.set_ylabel(f"validation accuracy (mean ± std, {len(seeds)} seeds)"); ax.grid(alpha=0.3)
ax.legend(fontsize=8); ax.set_title("accuracy against cost: t beside width and resolution")
ax = axes[1]
for key, label in [("params", "parameters"), ("macs", "multiply-adds"), ("ms", "ms per image")]:
    ax.plot(t_values, [by_t[t][key] / by_t[1][key] for t in t_values], "o-", label=label)
ax.set_xlabel("expansion ratio t (blocks 2-17)"); ax.set_ylabel("relative to t = 1")
ax.grid(alpha=0.3); ax.legend(); ax.set_title("cost against t")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
The cost is what the formula says: every step of $t$ adds the same multiply-adds, and $t = 6$
costs over three times the multiply-adds of $t = 1$ but less than twice its parameters (the
head and classifier do not depend on $t$). The milliseconds, as in 13.2, depend on the
machine and its load as much as on the multiply-adds: read them as a rough guide.

The accuracy, which the next cell prints and, at full size, checks, is not a straight line in
$t$. $t = 4$ and $t = 6$ are level (within a point, less than the spread over seeds), so on
this problem $t = 4$ buys the accuracy of Table 2's $t = 6$ for about three quarters of its
multiply-adds, in line with the paper's remark that smaller networks do well with slightly
smaller rates. Below that the accuracy falls: $t = 3$ lies between, and $t = 1$ and $t = 2$
lower still, over four points below $t = 4$ and $t = 6$. $t = 2$ is not better than $t = 1$
on the mean: one of its three seeds fell far behind, as some seeds of the shortcut between
expansions do in 13.4, and its spread is the widest of the five. Three seeds show that the
low ratios lose; they cannot rank $t = 1$ and $t = 2$. And beside the width and resolution
points, the expansion is the cheaper knob here: $t = 1$ at width 0.25 and 14 px costs less than half
the multiply-adds of width 0.25 at 10 px and is more accurate, since it keeps the
resolution, which 13.2 found is what this problem needs most.
"""

# %%
low, high = max(by_t[1]["mean"], by_t[2]["mean"]), min(by_t[4]["mean"], by_t[6]["mean"])
print(f"t = 4 and 6: {by_t[4]['mean']:.1%} and {by_t[6]['mean']:.1%} (t = 4 with "
      f"{by_t[4]['macs'] / by_t[6]['macs']:.0%} of the multiply-adds); t = 3: {by_t[3]['mean']:.1%}; "
      f"the better of t = 1 and 2: {low:.1%}, {high - low:.1%} below the worse of t = 4 and 6")
print("standard deviations over the seeds: " + ", ".join(f"t={t} {by_t[t]['std']:.1%}" for t in t_values))
print(f"t = 1 (width 0.25, 14 px): {by_t[1]['mean']:.1%} with {by_t[1]['macs'] / 1e6:.2f}M MACs; "
      f"width 0.25 at 10 px (t = 6): {acc[0.25, 10]['mean']:.1%} with {acc[0.25, 10]['macs'] / 1e6:.2f}M")
if not TINYMBV2_FAST:
    assert abs(by_t[4]["mean"] - by_t[6]["mean"]) < 0.01 and high - low > 0.04, by_t
    assert low < by_t[3]["mean"] < high, by_t
    assert by_t[4]["macs"] < 0.8 * by_t[6]["macs"]
    assert by_t[2]["std"] == max(by_t[t]["std"] for t in t_values) and by_t[2]["mean"] <= by_t[1]["mean"]
    assert by_t[1]["mean"] > acc[0.25, 10]["mean"] and by_t[1]["macs"] < 0.5 * acc[0.25, 10]["macs"]
    print("checked: t = 4 and t = 6 within a point of each other, over 4 points above t = 1 and 2, "
          "with t = 3 between; "
          "t = 4 at under 80% of t = 6's multiply-adds; t = 2 not above t = 1, with the widest "
          "spread; t = 1 beats width 0.25 at 10 px with under half its multiply-adds")

# %% [markdown]
r"""
## 13.4 The paper's Figure 6, trained: linear bottlenecks and where the shortcut sits

Besides width, resolution and expansion, the paper tests two design choices of the block
itself (section 6.4, Figure 6): (a) the **linear bottleneck** against a ReLU6 after the
projection, and (b) the **shortcut between the bottlenecks** (the thin tensors, the paper's
choice) against a shortcut between the expansions (the wide $t k$-channel tensors of
consecutive blocks) and against no shortcut. On ImageNet the linear bottleneck and the
shortcut between bottlenecks win. The ablations are arguments of the library's model, not
copies of it: `mobilenet_v2(..., bottleneck_activation="relu6")`,
`mobilenet_v2(..., shortcut="expansion")`, `mobilenet_v2(..., shortcut="none")`. None of them
adds or removes a parameter (a ReLU6 and an add have none), so every variant is the same
network size; the cell prints the counts.

They sit here, in the design chapter, rather than beside the block in chapters 4 and 5,
because comparing them needs the training loop of chapter 10 and the small-budget setup of
13.2. Each variant is trained with that setup (width 0.25, 14 px, three seeds; the paper's
network is 13.2's runs again). The plot shows the mean validation accuracy per epoch with a
band of one standard deviation.
"""

# %%
variants = {
    "linear bottleneck, shortcut between bottlenecks (paper)": {},
    "ReLU6 in the bottleneck": dict(bottleneck_activation="relu6"),
    "shortcut between expansions": dict(shortcut="expansion"),
    "no shortcut": dict(shortcut="none"),
}
abl_width, abl_res = 0.25, 14
curves, n_params = {}, {}
n_before, t_start = len(runs), time.perf_counter()
for name, ablation in variants.items():
    trained = [train_run(abl_width, abl_res, seed, **ablation) for seed in seeds]
    curves[name] = [run["curve"] for run in trained]
    n_params[name] = sum(int(p.size) for p in trained[0]["model"].parameters())
    final = np.array([c[-1] for c in curves[name]])
    print(f"{name:56s} {n_params[name]:,d} parameters; final validation accuracy "
          f"{final.mean():.1%} ± {final.std(ddof=1):.1%} over {len(seeds)} seeds "
          f"({', '.join(f'{a:.1%}' for a in final)})")
print(f"{len(runs) - n_before} new runs in {time.perf_counter() - t_start:.0f} s (the paper's network reuses 13.2's)")
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
### The same ablations on the 8x8 digits

A second data set tells whether the picture depends on mnist5k: the 8x8 digits of
scikit-learn (1,079 training images, all of them), at their own size (`small_input=True`: the
stem and the 24-channel stage keep stride 1, so the last stage sees $1\times1$ maps). Width
0.35, the width of chapter 12's search; the recipe is that chapter's, with its best range of
learning rate (SGD with momentum, learning rate 0.03, batches of 64) and a cosine schedule
over five epochs, and the BatchNorm statistics recalibrated after training (chapter 10), since
running averages over so few steps lag the weights. Four variants, three seeds each.
"""

# %%
from tinymbv2.train import TrainingDiverged, recalibrate_batchnorm

digits = load_dataset("digits")
d_norm = Normalize.from_data(digits.train.images)
d_keep = slice(None, 256 if TINYMBV2_FAST else None)
d_train, d_labels = d_norm(digits.train.images[d_keep]), digits.train.labels[d_keep]
d_val = Split(d_norm(digits.val.images), digits.val.labels)
d_width, d_epochs = 0.35, 2 if TINYMBV2_FAST else 5

def digits_run(seed, **ablation):
    """Final validation accuracy of one run on the digits (chance, 0.1, if it diverged)."""
    tinymbv2.manual_seed(seed)
    model = mobilenet_v2(width_mult=d_width, num_classes=10, in_channels=1, small_input=True,
                         seed=seed, **ablation)
    opt = optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=4e-5)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=d_epochs)
    try:
        fit(model, opt, DataLoader(d_train, d_labels, 64, seed=seed), epochs=d_epochs,
            scheduler=sched, progress=False, log=None)
    except TrainingDiverged:
        print(f"  seed {seed}, {ablation}: diverged, counted as chance")
        return 0.1
    recalibrate_batchnorm(model, d_train)
    return evaluate(model, d_val.images, d_val.labels)["accuracy"]

t_start = time.perf_counter()
d_final = {name: np.array([digits_run(seed, **ablation) for seed in seeds]) for name, ablation in variants.items()}
print(f"{len(variants) * len(seeds)} runs in {time.perf_counter() - t_start:.0f} s\n")
print(f"{'':56s} {'mnist5k (13.4)':>16s} {'8x8 digits':>16s}")
for name in variants:
    m5 = np.array([c[-1] for c in curves[name]])
    print(f"{name:56s} {m5.mean():7.1%} ± {m5.std(ddof=1):4.1%}   {d_final[name].mean():7.1%} ± "
          f"{d_final[name].std(ddof=1):4.1%}   ({', '.join(f'{a:.1%}' for a in d_final[name])})")
d_mean = {name: float(d_final[name].mean()) for name in variants}
print(f"\ndigits: (a) linear minus ReLU6 bottleneck {d_mean[paper] - d_mean[relu6]:+.1%}; "
      f"(b) between bottlenecks minus none {d_mean[paper] - d_mean[none]:+.1%}, "
      f"minus between expansions {d_mean[paper] - d_mean[expansion]:+.1%}")

# %% [markdown]
r"""
On the digits, which the next cell checks at full size, the two clear effects of mnist5k come
back: a ReLU6 in the bottleneck and no shortcut each cost over fifteen points, on a
data set where the paper's block reaches above 90%. The ordering of the two shortcuts does
not: on the digits the shortcut between the expansions is level with the paper's (a
little ahead on the mean, with a small spread for both). So the linear bottleneck and the
presence of a residual connection hold on both small problems; where the connection sits
matters on ImageNet in the paper, and on mnist5k at most in some seeds, but not here.
"""

# %%
if not TINYMBV2_FAST:
    assert d_mean[paper] - d_mean[relu6] > 0.15 and d_mean[paper] - d_mean[none] > 0.15, d_mean
    assert 0 <= d_mean[expansion] - d_mean[paper] < 0.05 and d_mean[paper] > 0.9, d_mean
    print("checked on the digits: the linear bottleneck beats the ReLU6 one and the shortcut "
          "between bottlenecks beats none, each by over 15 points; the shortcut between "
          "expansions is level or ahead by under 5 points; the paper's block is above 90%")

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
