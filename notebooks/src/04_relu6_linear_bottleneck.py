# %% [markdown]
r"""
# 4. ReLU6 and the linear bottleneck

**ReLU6** is $\min(\max(x, 0), 6)$. The paper (section 3.2) uses it "because of its
robustness when used with low-precision computation": a bounded activation has a known
range, so an 8-bit fixed-point format can spend its bits on it. Its derivative is 1 on
$(0, 6)$ and 0 elsewhere; at the kinks $x=0$ and $x=6$ PyTorch takes 0, and so does tinymbv2.

**The linear bottleneck** is the paper's central idea. A block's input and output are thin
(e.g. 24 channels), its inside is wide ($t = 6$ times more). The block ends with a $1\times1$
projection back to the thin width and **no activation after it**. Why not? Section 3.2 argues
with Figure 1: a ReLU applied to a low-dimensional representation destroys information,
while the same ReLU applied after embedding into a wide space loses almost nothing. So:
do the non-linear work in the wide space (expand, ReLU6, depthwise, ReLU6), and keep the
thin bottleneck linear.

## 4.1 The paper's Figure 1 experiment

Take a 2-D spiral, embed it in $n$ dimensions with a random matrix $T \in \mathbb{R}^{n\times 2}$,
apply ReLU, and map back with the pseudo-inverse $T^{+}$:

$$
\hat x = T^{+}\,\mathrm{ReLU}(T x).
$$

Without the ReLU, $T^+ T = I$ and $\hat x = x$ exactly (for $n \ge 2$ and $T$ of full rank).
With it, every point for which fewer than 2 of the $n$ coordinates of $Tx$ are positive is
squashed onto a line or the origin: several input points map to the same output, and no
later layer can tell them apart.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import numpy as np
import matplotlib.pyplot as plt

from tinymbv2 import Tensor, functional as F
from tinymbv2.models import mobilenet_v2

rng = np.random.default_rng(0)

# %%
t = np.linspace(0, 4 * np.pi, 800 if TINYMBV2_FAST else 2000)
spiral = np.stack([t * np.cos(t), t * np.sin(t)]) / (4 * np.pi)   # (2, P), centred on 0
dims = [2, 3, 5, 15, 30]

fig, axes = plt.subplots(2, 3, figsize=(10, 6.6))
axes = axes.ravel()
axes[0].scatter(*spiral, c=t, s=2, cmap="viridis"); axes[0].set_title("input")
print(f"{'n':>3s} {'distortion':>11s} {'points with < 2 active units':>29s} {'error without ReLU':>19s}")
collapsed, linear_error = {}, {}
for ax, n in zip(axes[1:], dims):
    T = rng.standard_normal((n, 2))
    h = T @ spiral
    back = np.linalg.pinv(T) @ np.maximum(h, 0)
    linear_back = np.linalg.pinv(T) @ h
    err = np.linalg.norm(back - spiral, axis=0).mean()
    collapsed[n] = ((h > 0).sum(axis=0) < 2).mean()
    linear_error[n] = np.abs(linear_back - spiral).max()
    print(f"{n:3d} {err:11.3f} {collapsed[n]:29.1%} {linear_error[n]:19.1e}")
    ax.scatter(*back, c=t, s=2, cmap="viridis"); ax.set_title(f"n = {n}")
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([]); ax.set_aspect("equal")
plt.suptitle("Spiral -> T -> ReLU -> pseudo-inverse (paper, Figure 1)")
plt.tight_layout()
plt.show()
assert max(linear_error.values()) < 1e-10, "without the ReLU the pseudo-inverse undoes T"
assert collapsed[2] > 0.25 and collapsed[3] > 0.1, "in 2 or 3 dimensions much of the spiral collapses"
assert collapsed[15] < 0.01 and collapsed[30] < 0.01, "in 15 or 30 almost nothing does"
print("checked: large parts collapse for n = 2, 3; under 1% for n = 15, 30")

# %% [markdown]
r"""
The *distortion* column is the mean distance $\lVert \hat x - x\rVert$: it is not the point, since
a map can distort without losing anything. The information loss is in the middle column.
As in the paper: for $n = 2, 3$ large parts of the spiral collapse (the fraction of points
with fewer than two active units is the fraction that lost a dimension), and by
$n = 15$ to $30$ almost every point keeps at least two active units, so the map is locally
invertible: the ReLU costs (nearly) no information. It is still *non-linear* (the recovered
spiral is distorted), which is what a network wants from it.

The flip side is the design rule: **the thin ends of the block stay linear.** After the
projection to a few channels, a ReLU would be applied in the low-dimensional space: the
$n = 2, 3$ panels.

## 4.2 ReLU6, checked against PyTorch (kinks included)

PyTorch is imported here, for the comparison.
"""

# %%
import torch

x = np.array([-1.0, 0.0, 0.5, 3.0, 6.0, 7.5])
tx = Tensor(x, requires_grad=True)
F.relu6(tx).backward(np.ones_like(x))
px = torch.tensor(x, requires_grad=True)
torch.nn.functional.relu6(px).backward(torch.ones_like(px))
print("x              :", x)
print("relu6 tinymbv2 :", F.relu6(Tensor(x)).data)
print("grad  tinymbv2 :", tx.grad)
print("grad  torch    :", px.grad.numpy())
forward_error = np.abs(F.relu6(Tensor(x)).data - torch.nn.functional.relu6(torch.tensor(x)).numpy()).max()
print("max |forward error| =", forward_error, "| max |grad error| =", np.abs(tx.grad - px.grad.numpy()).max())
assert forward_error == 0 and np.array_equal(tx.grad, px.grad.numpy())
assert tx.grad[x == 0.0] == 0 and tx.grad[x == 6.0] == 0, "the gradient is 0 at both kinks"

z = np.linspace(-2, 8, 400)
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(z, np.maximum(z, 0), "--", label="ReLU")
ax.plot(z, np.clip(z, 0, 6), label="ReLU6")
ax.legend(); ax.grid(alpha=0.3); ax.set_title("ReLU6 caps the activation at 6")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## 4.3 Where the linear bottleneck lives in the model

Each block of `mobilenet_v2()` ends with a $1\times1$ convolution and a BatchNorm, and nothing
after it. We list the layer types of one block: ReLU6 appears after the expansion and after the
depthwise convolution only.
"""

# %%
model = mobilenet_v2(seed=0)
block = model.features[2]
print(block)
kinds = [type(m).__name__ for m in block.modules() if not list(m.children())]
print("layer types in order:", kinds)
print("last layer is", kinds[-1], "-> the projection has no activation")
assert kinds == ["Conv2d", "BatchNorm2d", "ReLU6",   # expand
                 "Conv2d", "BatchNorm2d", "ReLU6",   # depthwise
                 "Conv2d", "BatchNorm2d"]            # project: linear

# %% [markdown]
r"""
## 4.4 BatchNorm and ReLU6 as one operation

Every ReLU6 in MobileNetV2 comes right after a BatchNorm, so the pair can run as one op,
`F.batch_norm_relu6`. The model itself runs them one after the other, as the paper draws
them; its fused view (`tinymbv2.fuse(model)`, chapter 14) runs every such pair as this op. The forward
clamps $z = \gamma\hat x + \beta$ while it writes it. The backward needs to know where
$0 < z < 6$, and instead of keeping a mask from the forward pass it **recomputes $z$** from the
BatchNorm input $x$, which the backward keeps anyway: one pass over memory fewer in each
direction, and one array fewer held between the passes. The numbers do not change:
"""

# %%
rng4 = np.random.default_rng(4)
xb = rng4.standard_normal((4, 3, 5, 5)) * 2
gamma, beta = rng4.standard_normal(3) * 4, rng4.standard_normal(3) + 3
g = rng4.standard_normal(xb.shape)
grads = {}
for name, op in [("separate", lambda x, w, b: F.relu6(F.batch_norm(x, None, None, w, b, training=True))),
                 ("fused", lambda x, w, b: F.batch_norm_relu6(x, None, None, w, b, training=True))]:
    x_, w_, b_ = (Tensor(a.copy(), requires_grad=True) for a in (xb, gamma, beta))
    y_ = op(x_, w_, b_)
    y_.backward(g)
    grads[name] = (y_.data, x_.grad, w_.grad, b_.grad)
print("outputs in [0, 6]:", grads["fused"][0].min(), grads["fused"][0].max())
for what, a, b in zip(["y", "dL/dx", "dL/dgamma", "dL/dbeta"], grads["fused"], grads["separate"]):
    print(f"{what:10} max |fused - separate| = {np.abs(a - b).max():.1e}")
    assert np.abs(a - b).max() < 1e-12, f"{what}: the fused op changed the numbers"
z_range = (grads["separate"][0] == 0).mean(), (grads["separate"][0] == 6).mean()
print(f"outputs clamped at 0: {z_range[0]:.0%}, at 6: {z_range[1]:.0%}: both kinks are exercised")
assert min(z_range) > 0

# %% [markdown]
r"""
## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see:
it prints `correct` or a hint naming the case that failed. The solutions are folded away
below each one.

### Exercise 4.1

Write ReLU6's backward: the gradient of the loss with respect to ReLU6's input, given the
upstream gradient `g`. Mind the kinks (section 4.2).
"""

# %%
from tinymbv2.exercises import check_relu6_backward


def relu6_backward(x, g):
    """x, the input of ReLU6, and g = dL/dy (same shape) -> dL/dx."""
    raise NotImplementedError("your code here")


check_relu6_backward(relu6_backward)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def relu6_backward(x, g):
    return g * ((x > 0) & (x < 6))
```

Strict inequalities: at exactly 0 and 6 the gradient is 0, as in PyTorch.

</details>

### Exercise 4.2

Write the backward of section 4.4's fused op, $y = \mathrm{ReLU6}(z)$ with
$z = \gamma \hat x + \beta$ the BatchNorm output in training mode: recompute $z$ from $x$,
let $g$ through only where $0 < z < 6$, then apply chapter 3's BatchNorm backward.
"""

# %%
from tinymbv2.exercises import check_bn_relu6_backward


def bn_relu6_backward(g, x, gamma, beta, eps=1e-5):
    """g = dL/dy and x (N, C, H, W), gamma and beta (C,) -> (dx, dgamma (C,), dbeta (C,))."""
    raise NotImplementedError("your code here")


check_bn_relu6_backward(bn_relu6_backward)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def bn_relu6_backward(g, x, gamma, beta, eps=1e-5):
    axes = (0, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    invstd = 1 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    xhat = (x - mean) * invstd
    z = gamma.reshape(1, -1, 1, 1) * xhat + beta.reshape(1, -1, 1, 1)   # recomputed
    g = g * ((z > 0) & (z < 6))                                         # ReLU6 first
    dbeta, dgamma = g.sum(axis=axes), (g * xhat).sum(axis=axes)
    dx = gamma.reshape(1, -1, 1, 1) * invstd * (
        g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))
    return dx, dgamma, dbeta
```

</details>

### Exercise 4.3

Section 4.1 counts a point as squashed when fewer than 2 units are active. The exact test:
near $x$, $x \mapsto \mathrm{ReLU}(Tx)$ is the linear map $DT$ with
$D = \mathrm{diag}(Tx > 0)$, and it loses a dimension when the *active rows* of $T$ have rank
below $d$, the dimension of the points. Write the fraction of points where that happens.
Two active units are not always enough: the check includes a $T$ with parallel rows.
"""

# %%
from tinymbv2.exercises import check_lost_rank_fraction


def lost_rank_fraction(T, points):
    """T (n, d), points (d, P) -> the fraction of points where the active rows of T have rank < d."""
    raise NotImplementedError("your code here")


check_lost_rank_fraction(lost_rank_fraction)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def lost_rank_fraction(T, points):
    d = points.shape[0]
    active = T @ points > 0                       # (n, P): which units each point turns on
    ranks = [np.linalg.matrix_rank(T[a]) if a.any() else 0 for a in active.T]
    return float(np.mean(np.array(ranks) < d))
```

For a random $T$ any two rows are independent, so "fewer than $d$ active units" gives the
same answer; the rank is the statement that holds for every $T$.

</details>
"""
