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

The table below is what `summary` computes for each width and resolution (1000 classes),
compared with the reference table measured on torchvision's implementation (REFERENCE.md,
in millions).
"""

# %%
reference = {  # millions of multiply-adds, torchvision mobilenet_v2 (conv + linear)
    1.4: [582.2, 428.2, 297.9, 191.3, 108.4], 1.0: [300.8, 221.3, 154.1, 99.1, 56.3],
    0.75: [209.1, 153.9, 107.3, 69.1, 39.4], 0.5: [97.1, 71.7, 50.2, 32.6, 18.9],
    0.35: [59.3, 43.9, 30.9, 20.2, 11.9],
}
params_ref = {1.4: 6_108_776, 1.0: 3_504_872, 0.75: 2_636_424, 0.5: 1_968_680, 0.35: 1_677_128}
resolutions = [224, 192, 160, 128, 96]
ours = {}
print(f"{'width':>6s} {'params':>11s} {'(ref diff)':>10s} " + " ".join(f"{r:>7d}" for r in resolutions))
worst = 0.0
for w, ref_row in reference.items():
    model = mobilenet_v2(width_mult=w, seed=0)
    row = [summary(model, input_size=(3, r, r)).total_macs / 1e6 for r in resolutions]
    ours[w] = row
    worst = max(worst, max(abs(a - b) for a, b in zip(row, ref_row)))
    n = sum(int(p.size) for p in model.parameters())
    print(f"{w:6.2f} {n:11,d} {n - params_ref[w]:10d} " + " ".join(f"{m:7.1f}" for m in row))
print(f"largest difference to the reference table: {worst:.2f}M (the reference is rounded to 0.1M)")

fig, ax = plt.subplots(figsize=(7, 4))
for w, row in ours.items():
    ax.plot(resolutions, row, "o-", label=f"width {w}")
ax.set_yscale("log"); ax.set_xlabel("input resolution"); ax.set_ylabel("million multiply-adds (log)")
ax.grid(alpha=0.3, which="both"); ax.legend(); ax.set_title("MobileNetV2: cost by width and resolution")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
Note the width 0.35 row: 59.3M at 224, not $0.35^2 \cdot 300 = 37$M. The 1280-channel head does
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
epochs = 2 if TINYMBV2_FAST else 4
pairs = [(0.35, 14), (0.35, 28)] if TINYMBV2_FAST else [(0.25, 14), (0.35, 14), (0.35, 20), (0.25, 28), (0.35, 28), (0.5, 28)]
subset = np.random.default_rng(0).permutation(len(ds.train))[:n_train]

from tinymbv2.train import recalibrate_batchnorm  # one training-mode pass, cumulative BN averages

points = []
for width, res in pairs:
    tr = Resize(res)(ds.train.images[subset])
    norm = Normalize.from_data(tr)
    keep = np.linspace(0, len(ds.val) - 1, 200 if TINYMBV2_FAST else len(ds.val)).astype(int)  # every class
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
    t0 = time.perf_counter(); evaluate(model, val.images, val.labels); ms = (time.perf_counter() - t0) / len(val) * 1e3
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
On a problem this small both knobs can be turned far down before the accuracy suffers; on
ImageNet the paper finds that, for a given budget of multiply-adds, the widths and
resolutions in the middle of the family give the best accuracy. Multiply-adds are also only a
proxy for time: small layers are dominated by per-layer overhead, which is why the measured
milliseconds do not shrink as fast as the multiply-adds.

## Exercises

**1.** Predict, then check with `summary`, the multiply-adds of width 1.0 at resolution 112.

<details><summary>Solution</summary>

About $300.8 \cdot (112/224)^2 \approx 75$M:

```python
print(summary(mobilenet_v2(), input_size=(3, 112, 112)).total_macs / 1e6)
```

(Slightly off the prediction, because of the layers whose maps round differently.)

</details>

**2.** Which fraction of the parameters of `mobilenet_v2(width_mult=0.35)` with 1000 classes
sits in the head (the last conv to 1280 channels and the classifier)?

<details><summary>Solution</summary>

```python
m = mobilenet_v2(width_mult=0.35)
head = sum(int(p.size) for p in m.features[18].parameters()) + sum(int(p.size) for p in m.classifier.parameters())
print(head / sum(int(p.size) for p in m.parameters()))
```

About 80%: the 1280 x 1000 classifier alone has 1.28M of the 1.68M parameters.

</details>
"""
