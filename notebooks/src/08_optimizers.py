# %% [markdown]
r"""
# 8. Optimizers and learning-rate schedules

All optimizers start from the gradient $g = \nabla_w L$ and differ in what they do with it.

* **SGD**: $\;w \leftarrow w - \eta\, g$.
* **Momentum**: $\;b \leftarrow \mu b + g,\; w \leftarrow w - \eta\, b$. A heavy ball: consistent
  directions accumulate (up to $1/(1-\mu)$ times), oscillating ones cancel.
* **RMSprop** (Hinton): keep a running mean of the *squared* gradient and divide by its root,
  so each weight gets its own step size:
  $v \leftarrow \alpha v + (1-\alpha) g^2,\; w \leftarrow w - \eta\, g / (\sqrt{v} + \epsilon)$.
* **Adam**: momentum on $g$ and RMSprop on $g^2$, both bias-corrected:
  $m \leftarrow \beta_1 m + (1-\beta_1) g$, $v \leftarrow \beta_2 v + (1-\beta_2) g^2$,
  $w \leftarrow w - \eta\,\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}$.

The seed article says RMSprop means "compute the gradient and step by the learning rate":
that is plain SGD. The running mean of $g^2$ *is* RMSprop.

**The paper's optimizer** (section 6.1) is TensorFlow's RMSProp, decay 0.9, momentum 0.9,
lr 0.045 decayed by 0.98 per epoch. TensorFlow's version differs from PyTorch's
`torch.optim.RMSprop` in three places: the mean square starts at **1** (PyTorch: 0), $\epsilon$
sits **inside** the square root, and the learning rate is multiplied **into** the momentum
buffer:

$$
\text{ms} \leftarrow \alpha\,\text{ms} + (1-\alpha) g^2,\qquad
\text{mom} \leftarrow \mu\,\text{mom} + \eta\, \frac{g}{\sqrt{\text{ms} + \epsilon}},\qquad
w \leftarrow w - \text{mom}.
$$

tinymbv2 has both: `optim.RMSprop` (PyTorch's) and `optim.RMSpropTF` (TensorFlow's, as timm's).
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import numpy as np
import matplotlib.pyplot as plt
import torch

import tinymbv2
from tinymbv2 import Tensor, functional as F, nn, optim
from tinymbv2.optim import lr_scheduler
from tinymbv2.data import load_dataset

# %% [markdown]
r"""
## 8.1 Trajectories on a 2-D surface

The Rosenbrock function $f(x, y) = (1-x)^2 + 100(y - x^2)^2$ has its minimum at $(1, 1)$ at
the bottom of a long, curved, narrow valley: steep across, nearly flat along. Every
optimizer starts at $(-1.5, 2)$; the learning rates are set so that each is stable.
"""

# %%
def rosenbrock(p):
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2

configs = {
    "SGD, lr 1e-3": (optim.SGD, dict(lr=1e-3), torch.optim.SGD),
    "momentum 0.9, lr 2e-4": (optim.SGD, dict(lr=2e-4, momentum=0.9), torch.optim.SGD),
    "RMSprop (PyTorch), lr 1e-2": (optim.RMSprop, dict(lr=1e-2), torch.optim.RMSprop),
    "RMSpropTF, lr 1e-2": (optim.RMSpropTF, dict(lr=1e-2, alpha=0.9), None),
    "Adam, lr 5e-2": (optim.Adam, dict(lr=5e-2), torch.optim.Adam),
}
steps = 400 if TINYMBV2_FAST else 1500
paths = {}
for name, (cls, kw, torch_cls) in configs.items():
    p = nn.Parameter(np.array([-1.5, 2.0]))
    opt = cls([p], **kw)
    path = [p.data.copy()]
    for _ in range(steps):
        loss = rosenbrock(p)
        opt.zero_grad(); loss.backward(); opt.step()
        path.append(p.data.copy())
    paths[name] = np.array(path)
    line = f"{name:28s} end ({path[-1][0]:+.3f}, {path[-1][1]:+.3f})  f = {rosenbrock(p.data):.2e}"
    if torch_cls is not None:   # the same steps with torch.optim
        q = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
        topt = torch_cls([q], **kw)
        for _ in range(steps):
            topt.zero_grad(); rosenbrock(q).backward(); topt.step()
        line += f"   max |tinymbv2 - torch.optim| = {np.abs(q.detach().numpy() - path[-1]).max():.1e}"
    print(line)

xx, yy = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-1, 3, 300))
fig, ax = plt.subplots(figsize=(8, 6))
ax.contour(xx, yy, rosenbrock(np.stack([xx, yy])), levels=np.logspace(-1, 3.5, 18), cmap="Greys", linewidths=0.7)
for name, path in paths.items():
    ax.plot(path[:, 0], path[:, 1], lw=1.5, label=name)
ax.plot(1, 1, "r*", ms=14, label="minimum (1, 1)"); ax.plot(-1.5, 2, "ko", label="start")
ax.legend(fontsize=8, loc="lower right"); ax.set_title(f"Rosenbrock, {steps} steps each")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
Plain SGD crawls: the step that is safe across the valley is tiny along it. Momentum
builds speed along the valley floor. RMSprop and Adam divide by the gradient's own scale per
coordinate, so the flat direction gets large steps and the steep one small steps.

## 8.2 RMSpropTF against the formula, and the first steps

PyTorch has no TensorFlow-style RMSprop to compare with, so we compare `RMSpropTF` with the
three lines of the formula above, written out in NumPy. Then the first-step size: with
$v_0 = 0$, PyTorch's first step is $\eta g / \sqrt{(1-\alpha) g^2} = \eta/\sqrt{1-\alpha}$ per
coordinate: $3.2\eta$ for $\alpha = 0.9$, a burst at the start of training. TensorFlow's
$\text{ms}_0 = 1$ makes the first step about $\eta g$.
"""

# %%
rng = np.random.default_rng(0)
lr, alpha, mu, eps = 0.045, 0.9, 0.9, 1.0                 # the paper's / TF-slim's values
w0 = rng.standard_normal(5)
grads = [rng.standard_normal(5) * 0.1 for _ in range(20)]

p = nn.Parameter(w0.copy())
opt = optim.RMSpropTF([p], lr=lr, alpha=alpha, momentum=mu, eps=eps)
w, ms, mom = w0.copy(), np.ones(5), np.zeros(5)
for g in grads:
    p.grad = g.copy(); opt.step()
    ms = alpha * ms + (1 - alpha) * g ** 2
    mom = mu * mom + lr * g / np.sqrt(ms + eps)
    w = w - mom
print("RMSpropTF vs the TF formula, max error after 20 steps:", np.abs(p.data - w).max())

g = np.array([0.1, 0.001])
for cls, kw in ((optim.RMSprop, dict(alpha=0.9, eps=1e-8)), (optim.RMSpropTF, dict(alpha=0.9, eps=1e-10))):
    q = nn.Parameter(np.zeros(2)); q.grad = g.copy()
    cls([q], lr=0.01, **kw).step()
    print(f"{cls.__name__:10s} first step for g = {g}: {-q.data}  (= {(-q.data / 0.01).round(3)} x lr)")

# %% [markdown]
r"""
## 8.3 A small network on the digits

The same comparison on a real problem: a two-layer perceptron on the 8x8 digits, mini-batches
of 64, fifteen epochs, each optimizer with a learning rate in its usual range.
"""

# %%
from tinymbv2.data import DataLoader
ds = load_dataset("digits")
epochs = 3 if TINYMBV2_FAST else 15
choices = {"SGD 0.1": (optim.SGD, dict(lr=0.1)), "momentum 0.9, lr 0.05": (optim.SGD, dict(lr=0.05, momentum=0.9)),
           "RMSprop 1e-3": (optim.RMSprop, dict(lr=1e-3)), "Adam 1e-3": (optim.Adam, dict(lr=1e-3))}
curves = {}
for name, (cls, kw) in choices.items():
    tinymbv2.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = cls(net.parameters(), **kw)
    loader = DataLoader(ds.train.images, ds.train.labels, batch_size=64, seed=0)
    losses = []
    for epoch in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(net(Tensor(xb)), yb)
            opt.zero_grad(); loss.backward(); opt.step()
            losses.append(loss.item())
    with tinymbv2.no_grad():
        acc = (net(Tensor(ds.val.images)).data.argmax(1) == ds.val.labels).mean()
    curves[name] = losses
    print(f"{name:22s} final training loss {np.mean(losses[-10:]):.3f}   validation accuracy {acc:.1%}")

fig, ax = plt.subplots(figsize=(7, 3.8))
for name, losses in curves.items():
    ax.plot(np.convolve(losses, np.ones(5) / 5, mode="valid"), label=name)
ax.set_yscale("log"); ax.set_xlabel("step"); ax.set_ylabel("training loss (smoothed)"); ax.legend(); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## 8.4 Learning-rate decay

A large learning rate makes fast progress but cannot settle into a narrow minimum; a small
one settles but crawls. Schedules start large and shrink. The paper multiplies the rate by
0.98 every epoch (`ExponentialLR(gamma=0.98)`); step decay, cosine annealing and one-cycle
are the other common choices. Each scheduler is checked against `torch.optim.lr_scheduler`.
"""

# %%
def lrs(make, lib, n=60, base=0.045):
    if lib == "ours":
        opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=base)
    else:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = make(opt, lib)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
    return np.array(out)

L = {"ours": lr_scheduler, "torch": torch.optim.lr_scheduler}
schedules = {
    "exponential 0.98 (paper)": lambda o, l: L[l].ExponentialLR(o, gamma=0.98),
    "step: x0.1 every 20": lambda o, l: L[l].StepLR(o, step_size=20, gamma=0.1),
    "cosine to 0 over 60": lambda o, l: L[l].CosineAnnealingLR(o, T_max=60),
    "one-cycle, max 0.1": lambda o, l: L[l].OneCycleLR(o, max_lr=0.1, total_steps=60),
}
fig, ax = plt.subplots(figsize=(7, 3.8))
for name, make in schedules.items():
    ours, theirs = lrs(make, "ours"), lrs(make, "torch")
    print(f"{name:26s} max |tinymbv2 - torch| = {np.abs(ours - theirs).max():.1e}")
    ax.plot(ours, label=name)
ax.set_xlabel("epoch"); ax.set_ylabel("learning rate"); ax.legend(); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## Exercises

**1.** Run Adam on the Rosenbrock function with learning rates 0.5, 0.05 and 0.005. Which one
gets closest to $(1, 1)$ in 1,000 steps, and why is the largest not the best?

<details><summary>Solution</summary>

```python
for lr in (0.5, 0.05, 0.005):
    p = nn.Parameter(np.array([-1.5, 2.0])); opt = optim.Adam([p], lr=lr)
    for _ in range(1000):
        loss = rosenbrock(p); opt.zero_grad(); loss.backward(); opt.step()
    print(lr, p.data, rosenbrock(p.data))
```

Adam's step is about `lr` per coordinate whatever the gradient's size, so with 0.5 it keeps
jumping across the narrow valley; 0.005 is too slow to get there in 1,000 steps.

</details>

**2.** Show that with a constant learning rate, `RMSpropTF(lr_in_momentum=True)` and
`RMSpropTF(lr_in_momentum=False)` give the same weights, and that they differ once a
scheduler lowers the rate.

<details><summary>Solution</summary>

```python
def run(flag, decay):
    p = nn.Parameter(w0.copy()); opt = optim.RMSpropTF([p], lr=lr, momentum=0.9, lr_in_momentum=flag)
    sched = lr_scheduler.StepLR(opt, step_size=5, gamma=0.1 if decay else 1.0)
    for g in grads:
        p.grad = g.copy(); opt.step(); sched.step()
    return p.data
for decay in (False, True):
    print(decay, np.abs(run(True, decay) - run(False, decay)).max())
```

</details>
"""
