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

The experiment: a small MobileNetV2 (width 0.35) on the 8x8 digits, each trial a short run of
a few epochs, searching the learning rate over four decades, $[10^{-4}, 1]$, and the weight
decay over $[10^{-6}, 10^{-2}]$, with the same budget of nine trials both ways. Over four
decades the learning rate decides most of the outcome: too small and a few epochs barely move the
weights, too large and SGD bounces out of every valley (or diverges).
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
from tinymbv2.train import TrainingDiverged, fit, grid, random_configs, recalibrate_batchnorm, run_search

ds = load_dataset("digits")
norm = Normalize.from_data(ds.train.images)
n_train = 512 if TINYMBV2_FAST else len(ds.train)     # 1,079 images at full size
epochs = 2 if TINYMBV2_FAST else 4
side = 2 if TINYMBV2_FAST else 3                      # the grid is side x side
subset = np.random.default_rng(0).permutation(len(ds.train))[:n_train]
train_x, train_y = norm(ds.train.images[subset]), ds.train.labels[subset]
val = Split(norm(ds.val.images), ds.val.labels)

def train_fn(config):
    """One trial: train from the same initial weights with ``config``'s lr and weight decay."""
    tinymbv2.manual_seed(0)
    model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0)
    opt = optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"])
    loader = DataLoader(train_x, train_y, batch_size=64, seed=0)
    try:
        fit(model, opt, loader, epochs=epochs, progress=False, log=None)
    except TrainingDiverged:                            # a learning rate too high: a result too
        return {"val_acc": None}
    recalibrate_batchnorm(model, train_x)               # precise BatchNorm statistics (chapter 10)
    return {"val_acc": evaluate(model, val.images, val.labels)["accuracy"], "model": model}

# %% [markdown]
r"""
## 12.1 The two searches, same budget
"""

# %%
lr_range, wd_range = (1e-4, 1.0), (1e-6, 1e-2)
grid_configs = grid({"lr": list(np.geomspace(*lr_range, side)), "weight_decay": list(np.geomspace(*wd_range, side))})
rand_configs = random_configs({"lr": ("log", *lr_range), "weight_decay": ("log", *wd_range)},
                              n_trials=len(grid_configs), seed=0)
print(f"{len(grid_configs)} trials each; distinct learning rates tried: grid "
      f"{len({c['lr'] for c in grid_configs})}, random {len({c['lr'] for c in rand_configs})}")

print("grid:")
grid_result = run_search(train_fn, grid_configs)
print("random:")
rand_result = run_search(train_fn, rand_configs)

def acc(row):
    """A trial's validation accuracy; a diverged trial counts as chance (10 classes)."""
    return 0.1 if row["val_acc"] is None else row["val_acc"]

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for ax, (name, res) in zip(axes[:2], (("grid", grid_result), ("random", rand_result))):
    lr = [r["lr"] for r in res["rows"]]; wd = [r["weight_decay"] for r in res["rows"]]
    sc = ax.scatter(lr, wd, c=[acc(r) for r in res["rows"]], cmap="viridis", vmin=0, vmax=1, s=80)
    ax.set_xscale("log"); ax.set_yscale("log"); ax.set_xlabel("learning rate"); ax.set_ylabel("weight decay")
    ax.set_title(f"{name} search: best {res['best']['val_acc']:.1%}")
fig.colorbar(sc, ax=axes[1], label="validation accuracy")
for name, res, marker in (("grid", grid_result, "s"), ("random", rand_result, "o")):
    rows = sorted(res["rows"], key=lambda r: r["lr"])
    axes[2].plot([r["lr"] for r in rows], [acc(r) for r in rows], marker, label=name, ms=7, alpha=0.8)
axes[2].set_xscale("log"); axes[2].set_xlabel("learning rate"); axes[2].set_ylabel("validation accuracy")
axes[2].set_title("projected on the learning rate"); axes[2].legend(); axes[2].grid(alpha=0.3)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
The right panel is the point of random search: projected on the hyper-parameter that
matters, the grid has only as many distinct points as it has values per axis, stacked on top
of each other, while random search spreads its budget over the whole range. That the
learning rate is the one that matters, and the weight decay hardly does in a few epochs, is
read off the grid: for each weight decay, the spread of accuracy across the learning rates;
for each learning rate, the spread across the weight decays. The cell prints both and, at
full size, checks that the first is several times the second and that the trials learn.
"""

# %%
table = {(r["lr"], r["weight_decay"]): acc(r) for r in grid_result["rows"]}
lrs, wds = sorted({k[0] for k in table}), sorted({k[1] for k in table})
spread_lr = np.mean([np.ptp([table[lr, wd] for lr in lrs]) for wd in wds])
spread_wd = np.mean([np.ptp([table[lr, wd] for wd in wds]) for lr in lrs])
print(f"grid: mean spread over the learning rates {spread_lr:.1%}, over the weight decays {spread_wd:.1%}")
best_both = max(grid_result["best"]["val_acc"], rand_result["best"]["val_acc"])
print(f"best trial of both searches: {best_both:.1%} validation accuracy (chance is 10%)")
if not TINYMBV2_FAST:
    assert spread_lr > 3 * spread_wd, (spread_lr, spread_wd)
    assert best_both > 0.85, best_both
    print("checked: the learning rate moves the accuracy over 3x more than the weight decay; "
          "the best trial is above 85%")

# %% [markdown]
r"""
## 12.2 One search is one draw

Which search wins *this* comparison depends on luck: on where the grid's few learning rates
happen to fall relative to the peak, and on where the random draws land. The measured trials
let us replay many searches cheaply. Since the weight decay hardly matters, the accuracy is,
to a good approximation, a function of the learning rate alone: we interpolate it between the
measured points (averaging the trials at the same learning rate) and run 4,000 searches of
nine trials on that curve. A grid places its $m$ learning rates before anyone knows where the
peak is, so each replayed grid is shifted by a random fraction of its spacing; its nine
trials test only $m$ learning rates. A random search tests nine.
"""

# %%
points = {}
for r in grid_result["rows"] + rand_result["rows"]:
    points.setdefault(np.log10(r["lr"]), []).append(acc(r))
log_lr = np.array(sorted(points)); curve = np.array([np.mean(points[k]) for k in log_lr])
lo, hi = np.log10(lr_range)
n_trials, replays = len(grid_configs), 4000
print(f"the curve: {len(log_lr)} learning rates measured, from {10 ** log_lr[0]:.2g} to {10 ** log_lr[-1]:.2g}")
g = np.random.default_rng(1)
shift = g.random((replays, 1))                                     # the grid's unknown offset
grid_lrs = lo + (shift + np.arange(side)) * (hi - lo) / side       # side learning rates, evenly spaced
rand_lrs = g.uniform(lo, hi, (replays, n_trials))                  # n_trials log-uniform draws
best_grid = np.interp(grid_lrs, log_lr, curve).max(axis=1)
best_rand = np.interp(rand_lrs, log_lr, curve).max(axis=1)
for name, best in (("grid  ", best_grid), ("random", best_rand)):
    print(f"{name} search, {n_trials} trials: mean best {best.mean():.1%}, "
          f"worst 10% of searches below {np.quantile(best, 0.1):.1%}, "
          f"within 2 points of the curve's top in {np.mean(best >= curve.max() - 0.02):.0%} of searches")
print(f"random beats or ties the grid in {np.mean(best_rand >= best_grid):.0%} of the replays")
if not TINYMBV2_FAST:
    assert best_rand.mean() > best_grid.mean() and np.quantile(best_rand, 0.1) > np.quantile(best_grid, 0.1)
    print("checked: on the measured curve, random search's best is higher on average and in its worst 10%")

# %% [markdown]
r"""
That is Bergstra and Bengio's argument in numbers: with the same budget, random search is
rarely far from the top because it tries many values of the one hyper-parameter that
matters, while a grid that lands badly stays bad for all its trials. (The replay trusts the
interpolated curve between measured points; the shape of a real curve between them is a
guess, which is one more reason to try many values.)

## 12.3 Report the winner on the test split, once
"""

# %%
test = Split(norm(ds.test.images), ds.test.labels)
for name, res in (("grid", grid_result), ("random", rand_result)):
    best = res["best"]
    test_acc = evaluate(best["model"], test.images, test.labels)["accuracy"]
    print(f"{name:6s} best: lr {best['lr']:.3g}, weight decay {best['weight_decay']:.2g} -> "
          f"validation {best['val_acc']:.1%}, test {test_acc:.1%}")

# %% [markdown]
r"""
## 12.4 Checking the sampler

A log-uniform draw on $[a, b]$ has $\log_{10}$ uniform on $[\log_{10} a, \log_{10} b]$: its mean is the
midpoint and its standard deviation the width over $\sqrt{12}$. We draw 20,000 configurations,
print the errors, and assert that they are within a few standard errors (the standard error of
the mean is $0.87/\sqrt{20000} \approx 0.006$).
"""

# %%
draws = np.log10([c["lr"] for c in random_configs({"lr": ("log", 1e-3, 1.0)}, 20000, seed=1)])
print(f"mean of log10(lr): {draws.mean():.4f} (expected -1.5, error {abs(draws.mean() + 1.5):.4f})")
print(f"std  of log10(lr): {draws.std():.4f} (expected {3 / np.sqrt(12):.4f}, error {abs(draws.std() - 3 / np.sqrt(12)):.4f})")
print("all inside [1e-3, 1]:", bool((draws >= -3).all() and (draws <= 0).all()))
assert abs(draws.mean() + 1.5) < 0.03 and abs(draws.std() - 3 / np.sqrt(12)) < 0.03
assert (draws >= -3).all() and (draws <= 0).all()

# %% [markdown]
r"""
## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see: it
prints `correct` or `not yet:` with a hint naming the case that fails.

### Exercise 12.1

Write the sampler of random search for a scale such as a learning rate: `n` values drawn
log-uniformly on $[\text{lo}, \text{hi}]$, from the generator `rng` you are given (so that a
seed reproduces a search). Then: what fraction of *uniform* draws on $[10^{-3}, 1]$ would fall
below $0.01$, and what fraction of log-uniform ones?
"""

# %%
from tinymbv2.exercises import check_log_uniform

def log_uniform(lo, hi, n, rng):
    """n draws whose logarithm is uniform on [log lo, log hi].

    lo, hi: 0 < lo <= hi; n: how many; rng: a numpy.random.Generator.
    Returns a float array of shape (n,), every value in [lo, hi].
    """
    raise NotImplementedError("your code here")

check_log_uniform(log_uniform)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def log_uniform(lo, hi, n, rng):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
```

Uniformly, only $(0.01 - 0.001)/(1 - 0.001) \approx 0.9\%$ of the draws land below 0.01,
although the decade $[10^{-3}, 10^{-2}]$ is as plausible as $[10^{-1}, 1]$; log-uniformly each of
the three decades gets a third. For a scale, the ratio between two values is what matters,
not their difference.

</details>

### Exercise 12.2

A search's table has one row per trial: the configuration, `val_acc` (None when the trial
diverged) and, to tempt you, `test_acc`. Write `best_trial(rows)`: the row with the highest
validation accuracy (the earlier trial on a tie), skipping diverged trials, or None when every
trial diverged.
"""

# %%
from tinymbv2.exercises import check_best_trial

def best_trial(rows):
    """rows: a list of dicts with keys "trial", "val_acc" (a float or None), "test_acc", ...
    Returns the row with the largest val_acc (the first one on a tie), or None."""
    raise NotImplementedError("your code here")

check_best_trial(best_trial)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def best_trial(rows):
    finished = [r for r in rows if r["val_acc"] is not None]
    return max(finished, key=lambda r: r["val_acc"]) if finished else None
```

`max` keeps the first of equal rows. The test split chooses nothing: once a test score has
picked the winner, it is the best of several noisy scores, biased upwards, and no longer an
estimate of the accuracy on new data.

</details>

### Exercise 12.3

Random search's guarantee needs no assumption about the landscape: each trial lands in the best
fraction `top` of the space with probability `top`, so $n$ independent trials miss it with
probability $(1 - \text{top})^n$. Write `trials_needed(top, confidence)`, the smallest $n$
with $1 - (1 - \text{top})^n \ge \text{confidence}$. (For the top 5% with 95% confidence it is
the well-known "about 60 trials".)
"""

# %%
from tinymbv2.exercises import check_trials_needed

def trials_needed(top, confidence):
    """The smallest whole n with 1 - (1 - top)**n >= confidence (0 < top < 1, 0 < confidence < 1)."""
    raise NotImplementedError("your code here")

check_trials_needed(trials_needed)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def trials_needed(top, confidence):
    return int(np.ceil(np.log(1 - confidence) / np.log(1 - top)))
```

Solving $(1 - \text{top})^n \le 1 - \text{confidence}$ for $n$ divides two negative logarithms;
the number of trials is rounded up, since $n$ must be whole and rounding down falls short of
the confidence. The top 5% with 95% confidence takes 59 trials, however many hyper-parameters
there are; a grid's cost grows with each one.

</details>
"""
