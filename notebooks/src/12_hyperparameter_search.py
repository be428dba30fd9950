# %% [markdown]
r"""
# 12. Hyper-parameter search: grid vs random

Some numbers are not learned by gradient descent: the learning rate, the weight decay, the
width, the number of epochs. We choose them by training several models and comparing them
**on the validation split** (never on the test split: a test score that chose the
configuration is no longer an unbiased estimate).

* **Grid search** tries every combination of a few values per hyper-parameter. With $d$
  hyper-parameters and $m$ values each it costs $m^d$ runs, and it tests only $m$ distinct
  values of each one.
* **Random search** draws each configuration at random (log-uniformly for scales such as
  learning rates). With the same budget of $m^d$ runs it tests $m^d$ distinct values of
  *every* hyper-parameter. When only a few hyper-parameters matter (the usual case), that is
  a much denser look at the ones that do (Bergstra & Bengio, 2012).

The experiment: a small MobileNetV2 on the 8x8 digits, searching the learning rate and the
weight decay with the same budget both ways.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import optim
from tinymbv2.data import DataLoader, Normalize, Split, load_dataset
from tinymbv2.models import mobilenet_v2
from tinymbv2.evaluation import evaluate
from tinymbv2.train import fit, grid, random_configs, run_search

ds = load_dataset("digits")
norm = Normalize.from_data(ds.train.images)
n_train = 512 if TINYMBV2_FAST else len(ds.train)
epochs = 2 if TINYMBV2_FAST else 4
side = 2 if TINYMBV2_FAST else 3                      # the grid is side x side
subset = np.random.default_rng(0).permutation(len(ds.train))[:n_train]
train_x, train_y = norm(ds.train.images[subset]), ds.train.labels[subset]
val = Split(norm(ds.val.images), ds.val.labels)

from tinymbv2.train import recalibrate_batchnorm  # one training-mode pass, cumulative BN averages

def train_fn(config):
    tinymbv2.manual_seed(0)
    model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)
    opt = optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"])
    loader = DataLoader(train_x, train_y, batch_size=32, seed=0)
    fit(model, opt, loader, epochs=epochs, progress=False, log=None)
    recalibrate_batchnorm(model, train_x)               # precise BatchNorm statistics
    return {"val_acc": evaluate(model, val.images, val.labels)["accuracy"], "model": model}

# %% [markdown]
r"""
## 12.1 The two searches, same budget
"""

# %%
grid_configs = grid({"lr": list(np.logspace(-3, 0, side)), "weight_decay": list(np.logspace(-6, -2, side))})
random_space = {"lr": ("log", 1e-3, 1.0), "weight_decay": ("log", 1e-6, 1e-2)}
rand_configs = random_configs(random_space, n_trials=len(grid_configs), seed=0)
print(f"{len(grid_configs)} runs each; distinct learning rates tried: grid "
      f"{len({c['lr'] for c in grid_configs})}, random {len({c['lr'] for c in rand_configs})}")

print("grid:")
grid_result = run_search(train_fn, grid_configs)
print("random:")
rand_result = run_search(train_fn, rand_configs)

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for ax, (name, res) in zip(axes[:2], (("grid", grid_result), ("random", rand_result))):
    lr = [r["lr"] for r in res["rows"]]; wd = [r["weight_decay"] for r in res["rows"]]
    sc = ax.scatter(lr, wd, c=[r["val_acc"] for r in res["rows"]], cmap="viridis", vmin=0, vmax=1, s=80)
    ax.set_xscale("log"); ax.set_yscale("log"); ax.set_xlabel("learning rate"); ax.set_ylabel("weight decay")
    ax.set_title(f"{name} search: best {res['best']['val_acc']:.1%}")
fig.colorbar(sc, ax=axes[1], label="validation accuracy")
for name, res, marker in (("grid", grid_result, "s"), ("random", rand_result, "o")):
    rows = sorted(res["rows"], key=lambda r: r["lr"])
    axes[2].plot([r["lr"] for r in rows], [r["val_acc"] for r in rows], marker, label=name, ms=7, alpha=0.8)
axes[2].set_xscale("log"); axes[2].set_xlabel("learning rate"); axes[2].set_ylabel("validation accuracy")
axes[2].set_title("projected on the learning rate"); axes[2].legend(); axes[2].grid(alpha=0.3)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
The right panel is the point of random search: projected on the hyper-parameter that
matters (here the learning rate; the weight decay hardly matters in a few epochs), the grid
has only as many distinct points as it has values per axis, stacked on top of each other,
while random search spreads its budget over the whole range.

## 12.2 Report the winner on the test split, once
"""

# %%
test = Split(norm(ds.test.images), ds.test.labels)
for name, res in (("grid", grid_result), ("random", rand_result)):
    best = res["best"]
    acc = evaluate(best["model"], test.images, test.labels)["accuracy"]
    print(f"{name:6s} best: lr {best['lr']:.3g}, weight decay {best['weight_decay']:.2g} -> "
          f"validation {best['val_acc']:.1%}, test {acc:.1%}")

# %% [markdown]
r"""
## 12.3 Checking the sampler

A log-uniform draw on $[a, b]$ has $\log_{10}$ uniform on $[\log_{10} a, \log_{10} b]$: its mean is the
midpoint and its standard deviation the width over $\sqrt{12}$. We draw 20,000 configurations
and print the errors.
"""

# %%
draws = np.log10([c["lr"] for c in random_configs({"lr": ("log", 1e-3, 1.0)}, 20000, seed=1)])
print(f"mean of log10(lr): {draws.mean():.4f} (expected -1.5, error {abs(draws.mean() + 1.5):.4f})")
print(f"std  of log10(lr): {draws.std():.4f} (expected {3 / np.sqrt(12):.4f}, error {abs(draws.std() - 3 / np.sqrt(12)):.4f})")
print("all inside [1e-3, 1]:", bool((draws >= -3).all() and (draws <= 0).all()))

# %% [markdown]
r"""
## Exercises

**1.** Why should the learning rate be drawn log-uniformly rather than uniformly on
$[10^{-3}, 1]$? What fraction of uniform draws would fall below 0.01?

<details><summary>Solution</summary>

Uniformly, only $(0.01 - 0.001)/(1 - 0.001) \approx 0.9\%$ of the draws land below 0.01, although
the decade $[10^{-3}, 10^{-2}]$ is as plausible as $[10^{-1}, 1]$. Log-uniformly each decade gets a
third of the draws: the scale is what matters, not the absolute value.

</details>

**2.** Add the width multiplier (0.25, 0.35 or 0.5) as a third hyper-parameter to the random
search (a list is sampled uniformly), using `config["width"]` in `train_fn`.

<details><summary>Solution</summary>

```python
def train_fn_w(config):
    tinymbv2.manual_seed(0)
    model = mobilenet_v2(width_mult=config["width"], num_classes=10, in_channels=1, small_input=True, seed=0)
    opt = optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"])
    h = fit(model, opt, DataLoader(train_x, train_y, 64, seed=0), val_split=val, epochs=epochs, progress=False, log=None)
    return {"val_acc": h["val_acc"][-1]}

run_search(train_fn_w, random_configs({**random_space, "width": [0.25, 0.35, 0.5]}, 6, seed=0))
```

</details>
"""
