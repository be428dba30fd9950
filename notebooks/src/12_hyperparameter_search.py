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
four epochs of SGD, searching three hyper-parameters with a budget of eight trials both ways:

| hyper-parameter | range | does it matter in four epochs? |
|---|---|---|
| learning rate | $[10^{-4}, 1]$, log scale | decisively: too small and a few epochs barely move the weights, too large and SGD bounces out of every valley (or diverges) |
| weight decay | $[10^{-6}, 10^{-2}]$, log scale | hardly, we expect: it regularises, and a run this short has little time to overfit |
| dropout before the classifier | $[0, 0.5]$ | hardly, for the same reason |

Nobody searching knows this beforehand (that is why they search all three), so the grid is
$2 \times 2 \times 2$: it tries two learning rates, each four times over, at four settings of
the two that do not matter. Random search tries eight learning rates. Section 12.2 measures
which of the three matters from the trials themselves.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import time

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
subset = np.random.default_rng(0).permutation(len(ds.train))[:n_train]
train_x, train_y = norm(ds.train.images[subset]), ds.train.labels[subset]
val = Split(norm(ds.val.images), ds.val.labels)

def train_fn(config):
    """One trial: train from the same initial weights with ``config``'s lr, weight decay and dropout."""
    start = time.perf_counter()
    tinymbv2.manual_seed(0)
    model = mobilenet_v2(width_mult=0.35, num_classes=10, in_channels=1, small_input=True, seed=0,
                         dropout=config["dropout"])
    opt = optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"])
    loader = DataLoader(train_x, train_y, batch_size=64, seed=0)
    try:
        fit(model, opt, loader, epochs=epochs, progress=False, log=None)
    except TrainingDiverged:                            # a learning rate too high: a result too
        return {"val_acc": None, "seconds": time.perf_counter() - start}
    recalibrate_batchnorm(model, train_x)               # precise BatchNorm statistics (chapter 10)
    return {"val_acc": evaluate(model, val.images, val.labels)["accuracy"], "model": model,
            "seconds": time.perf_counter() - start}

# %% [markdown]
r"""
## 12.1 The two searches, same budget

A grid's values are evenly spaced on each axis (on the log axis for a scale): the range is cut
into $m$ cells and each value sits at the same place in its cell. Where in the cell is a
choice made before anyone knows where the good values are; we draw it at random for each
grid (`offset`), so that section 12.2 can repeat the comparison fairly. A random search
draws its eight configurations from its own seed.
"""

# %%
space = {"lr": ("log", 1e-4, 1.0), "weight_decay": ("log", 1e-6, 1e-2), "dropout": ("uniform", 0.0, 0.5)}
side, n_trials = 2, 8                                 # a 2 x 2 x 2 grid; eight random trials

def grid_axis(kind, lo, hi, offset):
    """``side`` evenly spaced values on [lo, hi], each at ``offset`` (in [0, 1)) of its cell.

    Args:
        kind: "log" (spaced on the log axis) or "uniform".
        lo, hi: The range.
        offset: Where in its cell each value sits: 0 its lower edge, 0.5 its middle.

    Returns:
        A list of ``side`` floats, increasing.
    """
    a, b = (np.log10(lo), np.log10(hi)) if kind == "log" else (lo, hi)
    points = a + (offset + np.arange(side)) * (b - a) / side
    return [float(v) for v in (10.0 ** points if kind == "log" else points)]

def grid_search_configs(seed):
    """The grid of search ``seed``: ``side`` values per hyper-parameter, at a random offset per axis."""
    offsets = np.random.default_rng(seed).random(len(space))
    return grid({key: grid_axis(*spec, u) for (key, spec), u in zip(space.items(), offsets)})

grid_configs, rand_configs = grid_search_configs(0), random_configs(space, n_trials, seed=0)
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
    sc = ax.scatter(lr, wd, c=[acc(r) for r in res["rows"]], cmap="viridis", vmin=0, vmax=1,
                    s=[60 + 300 * r["dropout"] for r in res["rows"]], alpha=0.7)
    ax.set_xscale("log"); ax.set_yscale("log"); ax.set_xlim(*space["lr"][1:]); ax.set_ylim(*space["weight_decay"][1:])
    ax.set_xlabel("learning rate"); ax.set_ylabel("weight decay")
    ax.set_title(f"{name} search: best {res['best']['val_acc']:.1%}")
fig.colorbar(sc, ax=axes[1], label="validation accuracy (size: dropout)")
for name, res, marker in (("grid", grid_result, "s"), ("random", rand_result, "o")):
    rows = sorted(res["rows"], key=lambda r: r["lr"])
    axes[2].plot([r["lr"] for r in rows], [acc(r) for r in rows], marker, label=name, ms=7, alpha=0.6)
axes[2].set_xscale("log"); axes[2].set_xlabel("learning rate"); axes[2].set_ylabel("validation accuracy")
axes[2].set_title("projected on the learning rate"); axes[2].legend(); axes[2].grid(alpha=0.3)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
The grid's eight trials are four points of the (learning rate, weight decay) plane, each tried
at two dropouts (the two sizes of marker); projected on the learning rate (right) they are two
columns of four. Random search spreads the same eight trials over eight learning rates. Whether
that wins *this* comparison is luck: it depends on where the grid's two learning rates fell
and where the eight draws landed. One comparison is one draw; the next section repeats it.

## 12.2 Many searches each way, every trial trained

We run `searches` grid searches, each with its own random offsets, and as many random
searches, each with its own seed (the pair above is the first of them), and train every
trial. For each search we keep what the search would report: its best validation accuracy.
"""

# %%
searches = 2 if TINYMBV2_FAST else 6
results = {"grid": [grid_result], "random": [rand_result]}
for seed in range(1, searches):
    results["grid"].append(run_search(train_fn, grid_search_configs(seed), log=None))
    results["random"].append(run_search(train_fn, random_configs(space, n_trials, seed=seed), log=None))
rows = {name: [r for res in results[name] for r in res["rows"]] for name in results}
seconds = [r["seconds"] for name in rows for r in rows[name]]
print(f"{len(seconds)} trials trained, {np.mean(seconds):.2f} s each on average ({np.sum(seconds):.0f} s in all)")
best = {name: np.array([res["best"]["val_acc"] for res in results[name]]) for name in results}
top = max(acc(r) for name in rows for r in rows[name])
plateau = [acc(r) for name in rows for r in rows[name] if 0.01 <= r["lr"] <= 0.06]
print(f"the best trial anywhere: {top:.1%}; the {len(plateau)} trials with a learning rate in [0.01, 0.06]: "
      f"{min(plateau):.1%} to {max(plateau):.1%} (median {np.median(plateau):.1%})")
missed = 0.85                                         # a search whose best is below this missed the plateau
for name in results:
    b = best[name]
    print(f"{name:6s}: each search's best " + " ".join(f"{v:.1%}" for v in b))
    print(f"        mean {b.mean():.1%} (standard deviation {b.std(ddof=1):.1%}), worst {b.min():.1%}, "
          f"below {missed:.0%} in {np.sum(b < missed)} of {len(b)} searches")
standard_error = np.sqrt(sum(best[name].var(ddof=1) / searches for name in best))
print(f"random minus grid, mean best: {best['random'].mean() - best['grid'].mean():+.1%} "
      f"(standard error {standard_error:.1%})")
wins = np.sum(best["random"][:, None] >= best["grid"][None, :])
print(f"random beats or ties the grid in {wins} of the {searches ** 2} (grid, random) pairs of searches "
      f"({wins / searches ** 2:.0%})")

# %% [markdown]
r"""
Which hyper-parameters mattered is read off the random searches' trials, which spread every
hyper-parameter over its range: sort the trials by one hyper-parameter, cut them into four
groups of equal size, and ask what share of the variance of the accuracy lies between the
groups' means. A hyper-parameter that decides the accuracy explains most of it; one that does
not explains only what four groups pick up by chance, about $3/(n-1)$ for $n$ trials.
"""

# %%
random_rows = rows["random"]
accs = np.array([acc(r) for r in random_rows])
explained = {}
for key in space:
    groups = np.array_split(accs[np.argsort([r[key] for r in random_rows])], 4)
    explained[key] = sum(len(g) * (g.mean() - accs.mean()) ** 2 for g in groups) / (len(accs) * accs.var())
    print(f"{key:12s}: its quarter explains {explained[key]:.0%} of the variance of the accuracy")
print(f"(by chance alone: about {3 / (len(accs) - 1):.0%}, with {len(accs)} trials)")
if not TINYMBV2_FAST:
    assert explained["lr"] > 0.5 and max(explained["weight_decay"], explained["dropout"]) < 0.2, explained
    print("checked: the learning rate explains over half of the variance; weight decay and dropout under 20% each")

# %% [markdown]
r"""
Since only the learning rate matters, each trial's accuracy is, to a good approximation, that of
the trained trial with the nearest learning rate: with all the trials above as a lookup table,
thousands of searches can be replayed for free. This is the model of the comparison (it ignores
what weight decay and dropout add to the spread), and the measured searches are the check of
it: their bests should look like draws from the replayed distribution.
"""

# %%
table = sorted((np.log10(r["lr"]), acc(r)) for name in rows for r in rows[name])
table_lr, table_acc = np.array([t[0] for t in table]), np.array([t[1] for t in table])

def measured(log_lr):
    """The accuracy of the trained trial whose log10 learning rate is nearest ``log_lr``."""
    i = np.clip(np.searchsorted(table_lr, log_lr), 1, len(table_lr) - 1)
    nearer_left = log_lr - table_lr[i - 1] < table_lr[i] - log_lr
    return table_acc[np.where(nearer_left, i - 1, i)]

lo, hi = np.log10(space["lr"][1:])
replays = 4000
g = np.random.default_rng(1)
grid_lrs = lo + (g.random((replays, 1)) + np.arange(side)) * (hi - lo) / side   # side learning rates
rand_lrs = g.uniform(lo, hi, (replays, n_trials))                               # n_trials of them
replayed = {"grid": measured(grid_lrs).max(axis=1), "random": measured(rand_lrs).max(axis=1)}
for name, b in replayed.items():
    print(f"replayed {name:6s}: mean best {b.mean():.1%}, worst 10% of searches below {np.quantile(b, 0.1):.1%}, "
          f"below {missed:.0%} in {np.mean(b < missed):.0%} of searches")
print(f"replayed: random beats or ties the grid in {np.mean(replayed['random'] >= replayed['grid']):.0%} of the pairs")

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
for name, marker in (("grid", "s"), ("random", "o")):
    axes[0].plot([r["lr"] for r in rows[name]], [acc(r) for r in rows[name]], marker, label=f"{name} trials",
                 ms=5, alpha=0.5)
axes[0].set_xscale("log"); axes[0].set_xlabel("learning rate"); axes[0].set_ylabel("validation accuracy")
axes[0].set_title(f"all {len(seconds)} trials"); axes[0].legend(); axes[0].grid(alpha=0.3)
jitter = np.random.default_rng(2)
for i, (name, color) in enumerate((("grid", "C0"), ("random", "C1"))):
    axes[1].plot(i + jitter.uniform(-0.12, 0.12, searches), best[name], "o", color=color, ms=8, alpha=0.7)
    axes[1].plot([i - 0.25, i + 0.25], [best[name].mean()] * 2, color=color, lw=2)
axes[1].axhline(missed, color="gray", ls="--", lw=1, label=f"{missed:.0%}: missed the plateau")
axes[1].set_xticks([0, 1], ["grid 2x2x2", f"random, {n_trials} trials"]); axes[1].set_xlim(-0.6, 1.6)
axes[1].set_ylabel("the search's best validation accuracy"); axes[1].legend(loc="lower right")
axes[1].set_title(f"{searches} measured searches each way (bar: mean)")
for name, color in (("grid", "C0"), ("random", "C1")):
    axes[2].plot(np.sort(replayed[name]), np.linspace(0, 1, replays), color=color, label=f"{name}, replayed")
    axes[2].plot(np.sort(best[name]), (np.arange(searches) + 0.5) / searches, "o", color=color,
                 label=f"{name}, measured")
axes[2].set_xlabel("the search's best validation accuracy"); axes[2].set_ylabel("fraction of searches at or below")
axes[2].set_title("replayed (4,000 each) and measured"); axes[2].legend(); axes[2].grid(alpha=0.3)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
The measured searches and the replay tell one story. A random search's best lands on the
plateau of good learning rates nearly every time, because eight draws rarely all miss a
plateau most of a decade wide (the learning rates from 0.01 to 0.06 above). A grid's best lands there only when one of its two learning rates
happens to; when neither does, all eight trials are spent off the plateau, four at each
learning rate, changing only the weight decay and the dropout, which change nothing that
matters. (Those repeats are not wholly wasted: at one learning rate, short runs differ by a
few points by chance, and the best of four repeats can be the luckiest trial of all. That
luck is also why the winner's validation accuracy flatters it, as 12.3 shows on the test
split.)

With six searches each way, the difference of the mean bests is less than two standard errors:
suggestive, not conclusive on its own. What stands out beyond the noise is the spread: the
grid's worst searches, the ones that missed the plateau, against random searches that, all
six of them, found it; and the replay, thousands of searches over these same trials, agrees with the
measured ones, down to how often random search beats or ties the grid. The cell checks these
statements at full size.
"""

# %%
measured_wins, replayed_wins = wins / searches ** 2, np.mean(replayed["random"] >= replayed["grid"])
print(f"random beats or ties the grid: measured in {measured_wins:.0%} of the pairs, replayed in {replayed_wins:.0%}")
if not TINYMBV2_FAST:
    assert best["random"].mean() > best["grid"].mean(), best
    assert best["random"].mean() - best["grid"].mean() < 2 * standard_error, (best, standard_error)
    assert best["random"].min() > best["grid"].min() and best["random"].std() < best["grid"].std(), best
    assert np.sum(best["random"] < missed) == 0 < np.sum(best["grid"] < missed), best
    assert (replayed["random"].mean() > replayed["grid"].mean()
            and np.quantile(replayed["random"], 0.1) > np.quantile(replayed["grid"], 0.1)
            and np.mean(replayed["random"] < missed) < np.mean(replayed["grid"] < missed)), replayed
    assert abs(measured_wins - replayed_wins) < 0.15, (measured_wins, replayed_wins)
    print("checked: measured, random search's mean best is higher (by less than two standard errors), its "
          f"worst is higher, its spread smaller, and none of its searches ends below {missed:.0%} (some grids "
          f"do); replayed, its mean best and its worst 10% are higher and fewer searches end below {missed:.0%}; "
          "measured and replayed agree within 15 points on how often random beats or ties the grid")

# %% [markdown]
r"""
## 12.3 Report the winner on the test split, once
"""

# %%
test = Split(norm(ds.test.images), ds.test.labels)
for name, res in (("grid", grid_result), ("random", rand_result)):
    winner = res["best"]
    test_acc = evaluate(winner["model"], test.images, test.labels)["accuracy"]
    print(f"{name:6s} best: lr {winner['lr']:.3g}, weight decay {winner['weight_decay']:.2g}, "
          f"dropout {winner['dropout']:.2f} -> validation {winner['val_acc']:.1%}, test {test_acc:.1%}")

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

# %% [markdown]
r"""
### Exercise 12.4

Section 12.2 asked which hyper-parameters mattered by the share of the accuracy's variance
between groups. Write `share_explained(values, accs, groups)`: sort the trials by `values`,
cut them into `groups` consecutive groups with `np.array_split` (sizes differ by at most one),
and return

$$\frac{\sum_g n_g\,(\bar a_g - \bar a)^2}{\sum_i (a_i - \bar a)^2},$$

where $n_g$ and $\bar a_g$ are group $g$'s size and mean accuracy and $\bar a$ the mean of all.
Then: why does a hyper-parameter that does not matter still get a share near $(g - 1)/(n - 1)$
rather than 0?
"""

# %%
from tinymbv2.exercises import check_share_explained

def share_explained(values, accs, groups):
    """values, accs: arrays of shape (n,), a hyper-parameter and the accuracy of each trial;
    groups: how many groups. Returns the between-group share of the variance of accs, in [0, 1]."""
    raise NotImplementedError("your code here")

check_share_explained(share_explained)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def share_explained(values, accs, groups):
    parts = np.array_split(accs[np.argsort(values)], groups)
    between = sum(len(p) * (p.mean() - accs.mean()) ** 2 for p in parts)
    return between / ((accs - accs.mean()) ** 2).sum()
```

Each group's mean of $n_g$ unrelated accuracies still scatters around $\bar a$ by chance, with a
variance of about $\sigma^2 / n_g$; weighted by $n_g$ and summed over the $g$ groups that is
about $(g - 1)\,\sigma^2$ (one degree of freedom goes to $\bar a$), out of a total of about
$(n - 1)\,\sigma^2$. So a share near $(g - 1)/(n - 1)$ is what "does not matter" looks like, and
only a share well above it says the hyper-parameter moves the accuracy.

</details>
"""
