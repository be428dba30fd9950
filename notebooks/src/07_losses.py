# %% [markdown]
r"""
# 7. Losses: cross-entropy, focal, Dice

The network outputs logits $z \in \mathbb{R}^K$; the softmax turns them into probabilities
$p_k = e^{z_k}/\sum_j e^{z_j}$. A loss scores $p$ against the true class $t$, and its gradient
with respect to $z$ is what starts the backward pass.

**Cross-entropy** (what MobileNetV2 is trained with): $\;L_{CE} = -\log p_t$, with the beautifully
simple gradient

$$
\frac{\partial L_{CE}}{\partial z_k} = p_k - [k = t].
$$

With label smoothing $\varepsilon$ (the paper's TF recipe uses 0.1) the target becomes
$q = (1-\varepsilon)\,\text{onehot}(t) + \varepsilon/K$ and the gradient $p - q$.

**Focal loss** (Lin et al. 2017): $\;L_{FL} = -(1-p_t)^\gamma \log p_t$. Easy examples ($p_t \to 1$)
are down-weighted by $(1-p_t)^\gamma$; $\gamma = 0$ is cross-entropy. Designed for detection,
where easy background boxes outnumber objects a thousand to one.

**Soft Dice loss** (from segmentation): with $g = \text{onehot}(t)$ over a batch,
$\text{dice}_k = \frac{2\sum_n p_{nk} g_{nk} + s}{\sum_n p_{nk} + \sum_n g_{nk} + s}$ and
$L_{Dice} = 1 - \frac1K\sum_k \text{dice}_k$. Dice is a *similarity* (1 = perfect overlap):
the loss is one minus it.

The seed article says it uses "the Dice coefficient as the cost",
$\text{loss} = \frac1N\sum_i [\text{dice}(y_i, \hat y_i) + \lambda \lVert W\rVert^2]$. Minimising that
*maximises the mismatch*: a sign error. We will train with it and watch.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import Tensor, functional as F, nn, optim
from tinymbv2.data import load_dataset

rng = np.random.default_rng(0)

# %% [markdown]
r"""
## 7.1 Checked against PyTorch

PyTorch has cross-entropy (with label smoothing) built in; focal and Dice we write in a
few lines of PyTorch and let its autograd differentiate them. The library's versions are
single `Function`s with hand-derived backward passes.
"""

# %%
import torch          # PyTorch only for the comparison, imported after tinymbv2

K, N = 10, 16
z = rng.standard_normal((N, K)) * 2
t = rng.integers(0, K, size=N)
tz = torch.tensor(z)

def torch_focal(z, t, gamma=2.0):
    logp = torch.log_softmax(z, dim=1)[torch.arange(len(t)), t]
    return (-(1 - logp.exp()) ** gamma * logp).mean()

def torch_dice(z, t, s=1.0):
    p = torch.softmax(z, dim=1)
    g = torch.nn.functional.one_hot(t, z.shape[1]).to(p.dtype)
    dice = (2 * (p * g).sum(0) + s) / (p.sum(0) + g.sum(0) + s)
    return 1 - dice.mean()

checks = {
    "cross-entropy": (lambda z: F.cross_entropy(z, t), lambda z: torch.nn.functional.cross_entropy(z, torch.tensor(t))),
    "CE, label smoothing 0.1": (lambda z: F.cross_entropy(z, t, label_smoothing=0.1),
                                lambda z: torch.nn.functional.cross_entropy(z, torch.tensor(t), label_smoothing=0.1)),
    "focal, gamma 2": (lambda z: F.focal_loss(z, t, gamma=2.0), lambda z: torch_focal(z, torch.tensor(t))),
    "Dice": (lambda z: F.dice_loss(z, t), lambda z: torch_dice(z, torch.tensor(t))),
}
for name, (ours_fn, torch_fn) in checks.items():
    a = Tensor(z.copy(), requires_grad=True); la = ours_fn(a); la.backward()
    b = tz.clone().requires_grad_(True); lb = torch_fn(b); lb.backward()
    loss_err, grad_err = abs(la.item() - lb.item()), np.abs(a.grad - b.grad.numpy()).max()
    print(f"{name:24s} loss {la.item():.6f}  |loss err| {loss_err:.1e}  max |grad err| {grad_err:.1e}")
    assert loss_err < 1e-12 and grad_err < 1e-12   # float64: rounding only

# %% [markdown]
r"""
## 7.2 Loss and gradient as the predicted probability moves

One sample, ten classes; we move the true class's logit so that $p_t$ sweeps from 0.01 to
0.99 (the other logits stay 0) and plot each loss and the size of its gradient with
respect to the true logit. For Dice we use a batch of ten samples, all alike, since Dice is
computed over a batch.
"""

# %%
p_t = np.linspace(0.01, 0.99, 99)
z_t = np.log(p_t * (K - 1) / (1 - p_t))           # softmax([z_t, 0, ..., 0])[0] = p_t
curves = {"cross-entropy": F.cross_entropy, "focal, gamma=2": F.focal_loss, "Dice (batch of 10)": F.dice_loss}
values = {k: [] for k in curves}; grads = {k: [] for k in curves}
for zt in z_t:
    logits = np.zeros((10, K)); logits[:, 0] = zt
    for name, fn in curves.items():
        a = Tensor(logits.copy(), requires_grad=True)
        loss = fn(a, np.zeros(10, dtype=np.int64))
        loss.backward()
        values[name].append(loss.item()); grads[name].append(abs(a.grad[0, 0]) * 10)   # per sample

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
for name in curves:
    ax1.plot(p_t, values[name], label=name); ax2.plot(p_t, grads[name], label=name)
ax1.set_xlabel("$p_t$, probability of the true class"); ax1.set_ylabel("loss"); ax1.set_ylim(0, 4)
ax2.set_xlabel("$p_t$"); ax2.set_ylabel(r"$|\partial L / \partial z_t|$ per sample")
for ax in (ax1, ax2):
    ax.grid(alpha=0.3); ax.legend()
plt.tight_layout(); plt.show()
grads = {k: np.array(v) for k, v in grads.items()}
ce, focal, dice = grads["cross-entropy"], grads["focal, gamma=2"], grads["Dice (batch of 10)"]
print(f"{'|dL/dz_t| at p_t =':24s}" + "".join(f"{p_t[i]:>8.2f}" for i in (0, 49, 98)))
for name, g in grads.items():
    print(f"{name:24s}" + "".join(f"{g[i]:8.4f}" for i in (0, 49, 98)))
assert np.allclose(ce, 1 - p_t)                  # cross-entropy: exactly 1 - p_t
assert focal[-1] < 0.01 * ce[-1]                 # focal: easy examples hardly count
assert dice.max() < 0.5 * ce.max() and dice[0] < 0.05 * ce[0]
print("checked: CE's gradient is 1 - p_t; focal's vanishes for easy examples; Dice's stays small, "
      "smallest where the prediction is worst")

# %% [markdown]
r"""
Cross-entropy's gradient is $1 - p_t$: strong when the prediction is wrong, fading as it
gets right. Focal loss flattens the right end (easy examples contribute little). Dice's
gradient is small everywhere, and smallest where the prediction is worst; through the
denominator it also depends on the rest of the batch, not only on the sample: a weak, noisy
training signal for single-label classification.

## 7.3 Training with each loss, and with the article's sign

A linear classifier (softmax regression) on the 8x8 digits, full-batch gradient descent,
the same learning rate for all. Four losses: cross-entropy, Dice ($1 - \text{dice}$), focal, and
the article's "$+\text{dice} + \lambda\lVert W\rVert^2$" (`l2_penalty` adds the $\lambda\lVert W\rVert^2$ term).
"""

# %%
ds = load_dataset("digits")
Xtr, ytr = ds.train.images.reshape(len(ds.train), -1), ds.train.labels
Xva, yva = ds.val.images.reshape(len(ds.val), -1), ds.val.labels
steps = 60 if TINYMBV2_FAST else 300

def article_loss(z, y, model):
    return (1.0 - F.dice_loss(z, y)) + F.l2_penalty([model.weight], 1e-4)   # + dice coefficient

losses = {
    "cross-entropy": lambda z, y, m: F.cross_entropy(z, y),
    "focal (gamma 2)": lambda z, y, m: F.focal_loss(z, y),
    "Dice loss (1 - dice)": lambda z, y, m: F.dice_loss(z, y),
    "article: + dice + l2": article_loss,
}
history = {}
for name, loss_fn in losses.items():
    tinymbv2.manual_seed(0)
    model = nn.Linear(64, 10)
    opt = optim.SGD(model.parameters(), lr=0.5)
    acc = []
    for step in range(steps):
        loss = loss_fn(model(Tensor(Xtr)), ytr, model)
        opt.zero_grad(); loss.backward(); opt.step()
        with tinymbv2.no_grad():
            acc.append(float((model(Tensor(Xva)).data.argmax(1) == yva).mean()))
    history[name] = np.array(acc)
    reached = np.flatnonzero(history[name] >= 0.9)
    print(f"{name:22s} validation accuracy after {steps} steps: {acc[-1]:.1%}   "
          f"first step at 90%: {reached[0] + 1 if len(reached) else 'not reached'}")

fig, ax = plt.subplots(figsize=(7, 3.8))
for name, acc in history.items():
    ax.plot(acc, label=name)
ax.axhline(0.1, color="k", ls=":", lw=1, label="chance (10%)")
ax.set_xlabel("gradient step"); ax.set_ylabel("validation accuracy"); ax.legend(); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()

def steps_to_90(name):
    reached = np.flatnonzero(history[name] >= 0.9)
    return reached[0] + 1 if len(reached) else np.inf

ce_acc, focal_acc = history["cross-entropy"][-1], history["focal (gamma 2)"][-1]
assert max(steps_to_90("cross-entropy"), steps_to_90("focal (gamma 2)")) < steps  # both reach 90%
assert abs(ce_acc - focal_acc) < 0.03                                              # and end close
assert steps_to_90("Dice loss (1 - dice)") > 3 * max(steps_to_90("cross-entropy"), steps_to_90("focal (gamma 2)"))
assert history["Dice loss (1 - dice)"][-1] > 0.5                                   # Dice does learn
assert history["article: + dice + l2"][-1] < 0.1                                   # below chance
print("checked: CE and focal reach 90% and end within 3 points; Dice takes over 3x the steps; "
      "the article's loss ends below chance")

# %% [markdown]
r"""
Cross-entropy and focal loss learn quickly and end close together: on ten balanced classes
focal's down-weighting of easy examples neither helps nor hurts much (it was made for
detection, where easy background boxes swamp the rest; section 7.4 unbalances the classes).
Dice learns too, but several times more slowly. The article's loss drives the accuracy *below chance*: minimising the Dice
coefficient teaches the model to avoid the true class. The fix is one character,
$1 - \text{dice}$, and the better fix is to use cross-entropy, as the paper does.
"""

# %% [markdown]
r"""
## 7.4 Focal loss where it matters: rare classes

On balanced classes focal loss changed little. Its reason to exist is imbalance, so we make
some: in the training split, classes 0-4 keep 5% of their images (about 5 of ~110 on digits,
18 of 350 on mnist5k), classes 5-9 keep all of theirs. The validation split stays balanced,
and we read the **recall of each class** (the fraction of its images predicted as it), since
overall accuracy hides a model that ignores the rare classes.

Four losses, same linear model and full-batch steps as in 7.3:

* cross-entropy;
* focal, $\gamma = 2$: easy examples (mostly the common classes, once learnt) weigh less;
* class-weighted cross-entropy: $-\alpha_t \log p_t$ with $\alpha_k = N / (K N_k)$, inverse to
  the class's count $N_k$ (`focal_loss(..., gamma=0, alpha=...)`);
* focal with the same $\alpha$, which is how Lin et al. use it.

Which 5% survive is chance, so each loss runs on five draws of the imbalanced split (the
draw also seeds the model's initialisation); we show the mean and the spread.
"""

# %%
def imbalanced(labels, rare, keep_fraction, seed):
    """Indices of a training split where each class in `rare` keeps `keep_fraction` of its images."""
    draw = np.random.default_rng(seed)
    keep = np.ones(len(labels), bool)
    for c in rare:
        images_of_c = np.flatnonzero(labels == c)
        keep[draw.permutation(images_of_c)[int(round(keep_fraction * len(images_of_c))):]] = False
    return np.flatnonzero(keep)

def per_class_recall(predicted, labels, k=10):
    return np.array([(predicted[labels == c] == c).mean() for c in range(k)])

rare, common = np.arange(5), np.arange(5, 10)
draws = 2 if TINYMBV2_FAST else 5
imbalance_steps = 60 if TINYMBV2_FAST else 300
loss_names = ["cross-entropy", "focal (gamma 2)", "weighted CE (alpha)", "focal + alpha"]
recall = {}                                  # (dataset, loss) -> (draws, 10) recall per class
for dataset in ["digits", "mnist5k"]:
    data = load_dataset(dataset)
    X, y = data.train.images.reshape(len(data.train), -1), data.train.labels
    Xv, yv = data.val.images.reshape(len(data.val), -1), data.val.labels
    for seed in range(draws):
        kept = imbalanced(y, rare, 0.05, seed)
        Xi, yi = X[kept], y[kept]
        alpha = len(yi) / (10 * np.bincount(yi, minlength=10))      # inverse class frequency
        loss_of = {
            "cross-entropy": lambda z: F.cross_entropy(z, yi),
            "focal (gamma 2)": lambda z: F.focal_loss(z, yi, gamma=2.0),
            "weighted CE (alpha)": lambda z: F.focal_loss(z, yi, gamma=0.0, alpha=alpha),
            "focal + alpha": lambda z: F.focal_loss(z, yi, gamma=2.0, alpha=alpha),
        }
        for name in loss_names:
            tinymbv2.manual_seed(seed)
            model = nn.Linear(X.shape[1], 10)
            opt = optim.SGD(model.parameters(), lr=0.5)
            for step in range(imbalance_steps):
                loss = loss_of[name](model(Tensor(Xi)))
                opt.zero_grad(); loss.backward(); opt.step()
            with tinymbv2.no_grad():
                predicted = model(Tensor(Xv)).data.argmax(1)
            recall.setdefault((dataset, name), []).append(per_class_recall(predicted, yv))
    print(f"{dataset}: training images per class {np.bincount(yi, minlength=10).tolist()} "
          f"(last draw); validation balanced, {len(yv)} images")
    print(f"  {'loss':20s} {'rare 0-4 recall':>17s} {'common 5-9 recall':>18s} {'worst class':>12s}")
    for name in loss_names:
        r = np.array(recall[(dataset, name)])
        recall[(dataset, name)] = r
        rare_r, common_r = r[:, rare].mean(1), r[:, common].mean(1)
        print(f"  {name:20s} {rare_r.mean():9.1%} ± {rare_r.std():4.1%} {common_r.mean():10.1%} ± {common_r.std():4.1%}"
              f" {r.min(1).mean():11.1%}")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, dataset in zip(axes, ["digits", "mnist5k"]):
    for i, name in enumerate(loss_names):
        r = recall[(dataset, name)]
        ax.bar(np.arange(10) + (i - 1.5) * 0.2, r.mean(0), 0.2, yerr=r.std(0), label=name)
    ax.axvspan(-0.5, 4.5, color="k", alpha=0.06)
    ax.set_xticks(range(10)); ax.set_xlabel("class (shaded: kept at 5%)"); ax.set_title(dataset)
axes[0].set_ylabel("validation recall"); axes[0].legend(fontsize=8, loc="lower right")
plt.tight_layout(); plt.show()

if not TINYMBV2_FAST:
    def rare_recall(dataset, name):
        return recall[(dataset, name)][:, rare].mean(1)          # one value per draw
    def common_recall(dataset, name):
        return recall[(dataset, name)][:, common].mean(1)
    focal_gain = {d: rare_recall(d, "focal (gamma 2)") - rare_recall(d, "cross-entropy") for d in ["digits", "mnist5k"]}
    assert (focal_gain["digits"] > 0).all() and focal_gain["digits"].mean() > 0.05   # digits: focal helps, every draw
    assert abs(focal_gain["mnist5k"].mean()) < 0.03                                  # mnist5k: no real change
    for d in ["digits", "mnist5k"]:
        assert rare_recall(d, "weighted CE (alpha)").mean() > rare_recall(d, "focal (gamma 2)").mean() + 0.15
        assert common_recall(d, "weighted CE (alpha)").mean() > common_recall(d, "cross-entropy").mean() - 0.05
    print(f"checked: focal alone raises the rare classes' recall on digits in every draw "
          f"(+{focal_gain['digits'].mean():.1%} on average) and changes it by {focal_gain['mnist5k'].mean():+.1%} "
          f"on mnist5k; the class weights alpha add over 15 points more on both, for under 5 points "
          f"of the common classes' recall")

# %% [markdown]
r"""
What the output shows. Plain cross-entropy sees five images of each rare class against
~110 (or 350) of each common one, and its model mostly files a rare digit under a common
class: the rare classes' recall is roughly half that of the common ones. Focal loss alone
helps on digits, by over ten points on average and in every draw: once the common classes are learnt they
are easy examples, $(1-p_t)^2$ turns their gradient down, and the few hard rare images weigh
more. On mnist5k it changes nothing measurable: there the common classes stay hard for a
linear model (their recall is ~90%, not ~97%), so focal has few easy examples to discount.

What does move the rare classes is telling the loss about the imbalance: the class weight
$\alpha_k \propto 1/N_k$ makes the five rare images count like a hundred, and their recall
jumps (to ~85% on digits, ~70% on mnist5k) for a point or two of the common classes'
recall. Adding $\gamma = 2$ on top does not add to it here; it takes a few points back. Lin et al. pair $\alpha$ with
$\gamma$ for the same reason: on imbalanced data, focal's $\gamma$ is a refinement of the
weighting, not a replacement for it.
"""

# %% [markdown]
r"""
## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see: it
prints `correct` or `not yet:` with a hint naming the case that fails. Some hidden logits are
as large as 1000, where `np.exp(z)` overflows: work from the log-softmax,
$\log p_k = z_k - m - \log\sum_j e^{z_j - m}$ with $m = \max_j z_j$ per row.

### Exercise 7.1

Write the label-smoothed cross-entropy in NumPy: logits `z` of shape $(N, K)$, integer
targets `t` of shape $(N,)$, smoothing `eps`; the mean over the $N$ samples of
$-\sum_k q_k \log p_k$, with $q = (1-\varepsilon)\,\text{onehot}(t) + \varepsilon/K$.
"""

# %%
from tinymbv2.exercises import check_smoothed_cross_entropy

def smoothed_cross_entropy(z, t, eps):
    """Mean label-smoothed cross-entropy; z (N, K) float array, t (N,) int array, eps in [0, 1]."""
    raise NotImplementedError("your code here")

check_smoothed_cross_entropy(smoothed_cross_entropy)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def smoothed_cross_entropy(z, t, eps):
    n, k = z.shape
    shifted = z - z.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    q = (1 - eps) * np.eye(k)[t] + eps / k
    return -(q * logp).sum(axis=1).mean()
```

The smoothed target never asks for probability 1, so the logits need not grow without bound
to lower the loss: the model stays less over-confident. With $\varepsilon = 0$ it is plain
cross-entropy.

</details>

### Exercise 7.2

Write the gradient of the mean cross-entropy (no smoothing) with respect to the logits, the
$(N, K)$ array $\partial L/\partial z$, from the formula of the introduction, without autograd.
"""

# %%
from tinymbv2.exercises import check_cross_entropy_grad

def cross_entropy_grad(z, t):
    """dL/dz of L = mean_n(-log softmax(z_n)[t_n]); z (N, K), t (N,) -> (N, K)."""
    raise NotImplementedError("your code here")

check_cross_entropy_grad(cross_entropy_grad)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def cross_entropy_grad(z, t):
    n, k = z.shape
    shifted = z - z.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return (p - np.eye(k)[t]) / n
```

Each row sums to zero: the gradient moves probability to the true class from the others, in
proportion to what they hold. It is what the library computes in
`ReferenceKernels.cross_entropy_backward`, which `CrossEntropy.backward` calls.

</details>

### Exercise 7.3

Write the focal loss: the mean over the samples of $-(1-p_t)^\gamma \log p_t$, where $p_t$
is the softmax probability of the true class.
"""

# %%
from tinymbv2.exercises import check_focal_loss

def focal(z, t, gamma):
    """Mean focal loss; z (N, K) float array, t (N,) int array, gamma >= 0."""
    raise NotImplementedError("your code here")

check_focal_loss(focal)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def focal(z, t, gamma):
    shifted = z - z.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    logpt = logp[np.arange(len(t)), t]
    return (-(1 - np.exp(logpt)) ** gamma * logpt).mean()
```

It is $(1-p_t)^\gamma$ times the cross-entropy of each sample: with $\gamma = 2$, an example
already classified with $p_t = 0.9$ weighs $(0.1)^2 = 1/100$ of its cross-entropy.

</details>
"""
