# %% [markdown]
r"""
# 3. Batch normalisation

Every convolution in MobileNetV2 is followed by a BatchNorm (52 of them). BatchNorm
normalises each channel over the batch and the spatial positions, then lets the network
re-scale it with two learned numbers per channel.

**Forward (training mode).** For channel $c$, over its $M = N H W$ values $x_1, \dots, x_M$:

$$
\mu = \frac{1}{M}\sum_m x_m, \qquad
\sigma^2 = \frac{1}{M}\sum_m (x_m - \mu)^2,
$$

$$
\hat x_m = \frac{x_m - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad
y_m = \gamma\,\hat x_m + \beta .
$$

Note $\sigma^2$ is the *biased* variance (divide by $M$): that is what normalises.

**Backward.** Let $g_m = \partial L/\partial y_m$. The parameters are easy:
$\partial L/\partial\beta = \sum_m g_m$ and $\partial L/\partial\gamma = \sum_m g_m \hat x_m$.
For $x$, every $x_m$ moves $\mu$ and $\sigma^2$, which move *every* $\hat x$. Three paths:

$$
\frac{\partial L}{\partial x_m} =
\underbrace{\frac{\partial L}{\partial \hat x_m}\frac{1}{\sqrt{\sigma^2+\epsilon}}}_{\text{direct}}
+ \underbrace{\frac{\partial L}{\partial \mu}\frac{1}{M}}_{\text{through } \mu}
+ \underbrace{\frac{\partial L}{\partial \sigma^2}\frac{2(x_m-\mu)}{M}}_{\text{through } \sigma^2}
$$

with $\partial L/\partial\hat x_m = \gamma g_m$,
$\partial L/\partial\sigma^2 = -\tfrac12 \sum_m \gamma g_m (x_m-\mu)(\sigma^2+\epsilon)^{-3/2}$ and
$\partial L/\partial\mu = -\sum_m \gamma g_m / \sqrt{\sigma^2+\epsilon}$ (the $\mu$-dependence of
$\sigma^2$ contributes $\propto \sum_m (x_m - \mu) = 0$). Collecting terms:

$$
\boxed{\;\frac{\partial L}{\partial x_m} = \frac{\gamma}{\sqrt{\sigma^2+\epsilon}}
\Big( g_m - \overline{g} - \hat x_m\, \overline{g \hat x} \Big)\;}
\qquad \overline{g} = \tfrac1M \textstyle\sum g,\;\; \overline{g\hat x} = \tfrac1M \sum g \hat x .
$$

The gradient is the upstream gradient with its mean removed and its component along
$\hat x$ removed: BatchNorm's output cannot change by a shift or a scale of its input.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import inspect
import numpy as np
import matplotlib.pyplot as plt

from tinymbv2 import Tensor, functional as F, nn
from tinymbv2.kernels import kernel_set

reference = kernel_set("reference")  # the readable kernels (kernels/reference.py)
rng = np.random.default_rng(0)
print(inspect.getsource(reference.batch_norm_backward_train))

# %% [markdown]
r"""
## 3.1 Checked against PyTorch, with a random upstream gradient

PyTorch is imported here, where the comparisons start.
"""

# %%
import torch

x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
g = rng.standard_normal(x.shape)

tx, tg, tb = (Tensor(a.copy(), requires_grad=True) for a in (x, gamma, beta))
y = F.batch_norm(tx, None, None, tg, tb, training=True)
y.backward(g)

px, pg, pb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
py = torch.nn.functional.batch_norm(px, None, None, pg, pb, training=True)
py.backward(torch.tensor(g))

for name, ours, theirs in (("y", y.data, py.detach()), ("dL/dx", tx.grad, px.grad),
                           ("dL/dgamma", tg.grad, pg.grad), ("dL/dbeta", tb.grad, pb.grad)):
    error = np.abs(ours - theirs.numpy()).max()
    print(f"{name:10s} max |tinymbv2 - torch| = {error:.1e}")
    assert error < 1e-10, f"{name} disagrees with PyTorch"

# %% [markdown]
r"""
## 3.2 Why a check through y.sum() hides a wrong backward

A tempting test: `y.sum().backward()` and compare. But with $g_m = 1$ for all $m$,
$\overline g = 1$ and $\overline{g\hat x} = \overline{\hat x} = 0$, so the bracket is
$1 - 1 - 0 = 0$: **the true input gradient of $\sum y$ is exactly zero**, whatever $x$ is.
Any backward that is right about the $\overline g$ term passes, however wrong the rest is.

Below, a buggy backward with the sign of the variance term flipped. Through `.sum()` it
agrees with PyTorch to the last digit; with a random $g$ it is plainly wrong.
"""

# %%
def bn_backward_buggy(g, x, mean, invstd, weight):
    axes, m = (0, 2, 3), x.shape[0] * x.shape[2] * x.shape[3]
    xhat = (x - mean.reshape(1, -1, 1, 1)) * invstd.reshape(1, -1, 1, 1)
    gbias, gweight = g.sum(axis=axes), (g * xhat).sum(axis=axes)
    # BUG: + instead of - in front of the variance path
    return (weight * invstd).reshape(1, -1, 1, 1) * (g - (gbias / m).reshape(1, -1, 1, 1)
                                                     + xhat * (gweight / m).reshape(1, -1, 1, 1))

_, mean, invstd = reference.batch_norm_forward_train(x, gamma, beta, 1e-5)
errors = {}
for name, upstream in (("g = ones (via .sum())", np.ones_like(x)), ("g random", g)):
    px = torch.tensor(x, requires_grad=True)
    torch.nn.functional.batch_norm(px, None, None, torch.tensor(gamma), torch.tensor(beta),
                                   training=True).backward(torch.tensor(upstream))
    errors[name] = np.abs(bn_backward_buggy(upstream, x, mean, invstd, gamma) - px.grad.numpy()).max()
    print(f"buggy backward, {name:22s}: max error vs torch = {errors[name]:.1e}   "
          f"(largest true gradient {np.abs(px.grad.numpy()).max():.1e})")
assert errors["g = ones (via .sum())"] < 1e-12 and errors["g random"] > 0.1
print("checked: the bug is invisible through .sum() and plain with a random g")

# %% [markdown]
r"""
## 3.3 Running statistics, train vs eval

At test time there may be a single image, so the batch statistics are replaced by
running averages collected during training (PyTorch's convention, which torchvision's
weights assume):

$$
\text{running_mean} \leftarrow (1-m)\,\text{running_mean} + m\,\mu,
$$

$$
\text{running_var} \leftarrow (1-m)\,\text{running_var} + m\,\sigma^2 \tfrac{M}{M-1},
$$

with momentum $m = 0.1$ and the *unbiased* variance. In eval mode
$y = \gamma (x - \text{running_mean})/\sqrt{\text{running_var}+\epsilon} + \beta$: a fixed
per-channel affine map (chapter 14 folds it into the convolution).

We feed both `nn.BatchNorm2d` and `torch.nn.BatchNorm2d` the same batches and compare the
running statistics and the eval-mode outputs.
"""

# %%
steps = 20 if TINYMBV2_FAST else 100
ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
true_mean = np.array([2.0, -1.0, 0.5], dtype=np.float32)
batch_means, running = [], []
for _ in range(steps):
    xb = (rng.standard_normal((8, 3, 4, 4)) * 1.5 + true_mean.reshape(1, 3, 1, 1)).astype(np.float32)
    ours(Tensor(xb)); theirs(torch.tensor(xb))
    batch_means.append(xb[:, 0].mean()); running.append(float(ours.running_mean.data[0]))
stat_errors = [np.abs(ours.running_mean.data - theirs.running_mean.numpy()).max(),
               np.abs(ours.running_var.data - theirs.running_var.numpy()).max()]
print("running_mean max error:", stat_errors[0])
print("running_var  max error:", stat_errors[1])
print("num_batches_tracked   :", int(ours.num_batches_tracked.data), "vs", int(theirs.num_batches_tracked))
assert max(stat_errors) < 1e-5 and int(ours.num_batches_tracked.data) == int(theirs.num_batches_tracked) == steps

ours.eval(); theirs.eval()
xt = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
with torch.no_grad():
    err = np.abs(ours(Tensor(xt)).data - theirs(torch.tensor(xt)).numpy()).max()
print("eval-mode output max error:", err)
assert err < 1e-5

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(batch_means, ".", alpha=0.6, label="batch mean (channel 0)")
ax.plot(running, label="running mean, momentum 0.1")
ax.axhline(true_mean[0], color="k", ls="--", lw=1, label="true mean")
ax.set_xlabel("training step"); ax.legend(); ax.grid(alpha=0.3)
ax.set_title("Running statistics: an exponential moving average starting from 0")
plt.tight_layout(); plt.show()

for k in (1, 10, steps):
    print(f"after {k:3d} steps: the starting 0 still weighs 0.9^{k} = {0.9 ** k:.3f}; "
          f"running mean {running[k - 1]:+.3f} (true {true_mean[0]:+.1f})")
assert running[9] < 0.8 * true_mean[0], "after 10 steps the running mean is still far off"
assert abs(running[-1] - true_mean[0]) < 0.4, "after many steps it has caught up"
print("checked: far off after 10 steps, close after", steps)

# %% [markdown]
r"""
The running mean starts at 0, and each step keeps only $0.9$ of what it held: after
$1/m = 10$ steps the starting value still weighs about a third, and it takes a few tens of
steps to fade. A network evaluated after only a handful of training steps uses poor
statistics. That is one reason why "it trains well but evaluates badly" is a classic
BatchNorm symptom, together with a batch too small for its statistics to be representative.
(In training mode a channel needs more than one value per batch: with $M = 1$, $x - \mu = 0$
and the unbiased variance $\sigma^2 M/(M-1)$ divides by zero, so `nn.BatchNorm2d` refuses a
batch of one 1x1 image.)

## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see:
it prints `correct` or a hint naming the case that failed. The solutions are folded away
below each one.

### Exercise 3.1

Write BatchNorm's forward pass in training mode, from the formulas at the top of the
chapter: per channel, over the batch and both spatial axes.
"""

# %%
from tinymbv2.exercises import check_batch_norm_train


def batch_norm_train(x, gamma, beta, eps=1e-5):
    """x (N, C, H, W), gamma and beta (C,) -> y (N, C, H, W), normalised by the batch statistics."""
    raise NotImplementedError("your code here")


check_batch_norm_train(batch_norm_train)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def batch_norm_train(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)   # biased: divide by M
    xhat = (x - mean) / np.sqrt(var + eps)
    return gamma.reshape(1, -1, 1, 1) * xhat + beta.reshape(1, -1, 1, 1)
```

</details>

### Exercise 3.2

Write the backward pass: `(dx, dgamma, dbeta)` from the upstream gradient `g`, with the
boxed formula. The check uses a random `g`, as section 3.2 says it must.
"""

# %%
from tinymbv2.exercises import check_batch_norm_backward


def batch_norm_backward(g, x, gamma, eps=1e-5):
    """g = dL/dy and x (N, C, H, W), gamma (C,) -> (dx (N, C, H, W), dgamma (C,), dbeta (C,))."""
    raise NotImplementedError("your code here")


check_batch_norm_backward(batch_norm_backward)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def batch_norm_backward(g, x, gamma, eps=1e-5):
    axes = (0, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    invstd = 1 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    xhat = (x - mean) * invstd
    dbeta, dgamma = g.sum(axis=axes), (g * xhat).sum(axis=axes)
    dx = gamma.reshape(1, -1, 1, 1) * invstd * (
        g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))
    return dx, dgamma, dbeta
```

</details>

### Exercise 3.3

Write one update of the running statistics, as `nn.BatchNorm2d` makes it after each
training batch (section 3.3).
"""

# %%
from tinymbv2.exercises import check_running_stats


def update_running(running_mean, running_var, x, momentum=0.1):
    """running_mean, running_var (C,), a batch x (N, C, H, W) -> (new running_mean, new running_var)."""
    raise NotImplementedError("your code here")


check_running_stats(update_running)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def update_running(running_mean, running_var, x, momentum=0.1):
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    unbiased = var * m / (m - 1)
    return ((1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * unbiased)
```

The normalisation uses the biased variance; the running one, meant to estimate the
variance of the whole data set, the unbiased one (PyTorch's convention).

</details>
"""
