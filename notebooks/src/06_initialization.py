# %% [markdown]
r"""
# 6. Weight initialisation

Before the first step of training, the weights are random. Their *scale* decides whether a
signal survives the trip through many layers. For a layer $y = \sum_{j=1}^{n} w_j x_j$ with
independent zero-mean weights,

$$
\operatorname{Var}(y) = n\,\operatorname{Var}(w)\,\mathbb{E}[x^2].
$$

After a ReLU, half of a symmetric pre-activation is zeroed, so $\mathbb{E}[x^2] = \tfrac12\operatorname{Var}(y_{\text{prev}})$.
The variance is therefore kept from layer to layer when

$$
\operatorname{Var}(w) = \frac{2}{n}
\qquad\text{(He et al. 2015, "Kaiming" initialisation)}.
$$

With $n = \text{fan_in} = C_i k^2$ the *forward* activations keep their scale; with
$n = \text{fan_out} = C_o k^2$ the *backward* gradients do. torchvision's MobileNetV2 (and
tinymbv2's) draw every convolution from $\mathcal{N}(0, 2/\text{fan_out})$, BatchNorm
$\gamma = 1, \beta = 0$, and the classifier from $\mathcal{N}(0, 0.01^2)$.

A detail that surprises people: for the depthwise $3\times3$ weight $(C, 1, 3, 3)$, PyTorch's
fan_out is $9C$ (it does not divide by the groups), so the depthwise filters start very small,
$\text{std} = \sqrt{2/(9C)}$, about $0.04$ for $C = 144$.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import math
import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import Tensor, functional as F, nn
from tinymbv2.models import mobilenet_v2

rng = np.random.default_rng(0)

# %% [markdown]
r"""
## 6.1 A deep plain network: vanish, keep, or explode

Thirty $3\times3$ convolutions with ReLU and *no* BatchNorm, on a random input. We draw the
weights with the Kaiming std $\sqrt{2/\text{fan_in}}$, and with half and twice that, and
record the standard deviation of the activations after each layer.
"""

# %%
depth, channels = 30, 32
x0 = rng.standard_normal((4 if TINYMBV2_FAST else 16, channels, 16, 16)).astype(np.float32)
fan_in = channels * 9
kaiming = math.sqrt(2 / fan_in)
curves = {}
with tinymbv2.no_grad():
    for label, std in (("0.5 x Kaiming", 0.5 * kaiming), ("Kaiming (He)", kaiming), ("2 x Kaiming", 2 * kaiming)):
        h, stds = Tensor(x0), []
        for layer in range(depth):
            w = Tensor((rng.standard_normal((channels, channels, 3, 3)) * std).astype(np.float32))
            h = F.relu(F.conv2d(h, w, padding=1))
            stds.append(float(h.data.std()))
        curves[label] = stds

fig, ax = plt.subplots(figsize=(7, 3.8))
for label, stds in curves.items():
    ax.semilogy(range(1, depth + 1), stds, "o-", ms=3, label=label)
ax.set_xlabel("layer"); ax.set_ylabel("std of activations (log)"); ax.grid(alpha=0.3); ax.legend()
ax.set_title("30 conv + ReLU layers, no BatchNorm")
plt.tight_layout(); plt.show()
predicted = {"0.5 x Kaiming": 0.5, "Kaiming (He)": 1.0, "2 x Kaiming": 2.0}
measured = {}
for label, stds in curves.items():
    measured[label] = (stds[-1] / stds[0]) ** (1 / (depth - 1))   # geometric mean per layer
    print(f"{label:14s} std after layer 1: {stds[0]:.3g}   after layer {depth}: {stds[-1]:.3g}"
          f"   factor per layer: measured {measured[label]:.3f}, predicted {predicted[label]:g}")
for label in predicted:
    assert abs(measured[label] / predicted[label] - 1) < 0.15, (label, measured[label])
kaiming_drift = curves["Kaiming (He)"][-1] / curves["Kaiming (He)"][0]
assert 0.1 < kaiming_drift < 10, kaiming_drift
print("checked: each factor within 15% of its prediction; the Kaiming curve ends within 10x of its start")

# %% [markdown]
r"""
Each layer multiplies the variance by $n\operatorname{Var}(w)/2$: by $1/4$ for half the std
and by $4$ for twice the std, so the std changes by $\times\frac12$ or $\times 2$ per layer:
after 30 layers, $2^{\pm 30} \approx 10^{\pm 9}$. Only the Kaiming scale keeps the signal usable.
Even it does not hold the std exactly: each layer's particular random weights scale the
signal by a random factor near 1 (and the zero padding at the edges of the $16\times16$ maps
loses a little), and thirty such factors multiply, so the Kaiming curve wanders, within a
small factor of where it started.

## 6.2 tinymbv2's initialisation, checked against torchvision's

The initial weights are random, so we compare their *statistics*: the standard deviation of
each kind of layer, against the formula and against a torchvision model.
"""

# %%
import torch          # PyTorch only for the comparison, imported after tinymbv2
import torchvision

ours = mobilenet_v2(seed=0)
torch.manual_seed(0)
tv = torchvision.models.mobilenet_v2()
tv_params = dict(tv.named_parameters())
print(f"{'parameter':30s} {'shape':>18s} {'formula':>9s} {'tinymbv2':>9s} {'torchvision':>11s}")
for name in ("features.0.0.weight", "features.2.conv.0.0.weight", "features.2.conv.1.0.weight",
             "features.7.conv.1.0.weight", "features.17.conv.2.weight", "features.18.0.weight",
             "classifier.1.weight"):
    p = dict(ours.named_parameters())[name]
    if name.startswith("classifier"):
        formula = 0.01
    else:
        formula = math.sqrt(2 / (p.shape[0] * p.shape[2] * p.shape[3]))   # fan_out = C_o k^2
    print(f"{name:30s} {str(p.shape):>18s} {formula:9.4f} {p.data.std():9.4f} {tv_params[name].detach().std().item():11.4f}")
ours_std = np.array([p.data.std() for n, p in ours.named_parameters() if n.endswith("weight") and p.ndim == 4])
tv_std = np.array([p.detach().std().item() for n, p in tv.named_parameters() if n.endswith("weight") and p.ndim == 4])
std_difference = np.max(np.abs(ours_std - tv_std) / tv_std)
print(f"\nover all {len(ours_std)} conv weights: max relative difference of the std, tinymbv2 vs torchvision =",
      f"{std_difference:.3f}  (sampling noise; the smallest layer has {min(p.data.size for p in ours.parameters() if p.ndim == 4)} weights)")
assert len(ours_std) == 52 and std_difference < 0.2

# %% [markdown]
r"""
## 6.3 BatchNorm makes the network forgiving (in training mode)

MobileNetV2 has a BatchNorm after every convolution. In training mode it rescales every
channel to unit variance, whatever the weights' scale, so a bad initialisation is largely
undone. In eval mode right after initialisation (running statistics 0 and 1) BatchNorm does
nothing, and the raw scale shows. We push a batch through the 19 stages of `features` with
torchvision's init and with all convolution weights scaled by 0.3.
"""

# %%
res = 64 if TINYMBV2_FAST else 128
xb = Tensor(rng.standard_normal((8, 3, res, res)).astype(np.float32))

def stage_stds(model):
    h, out = xb, []
    for layer in model.features:
        h = layer(h)
        out.append(float(h.data.std()))
    return out

fig, ax = plt.subplots(figsize=(7, 3.8))
last = {}
for scale in (1.0, 0.3):
    m = mobilenet_v2(seed=0)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            mod.weight.data *= scale
    with tinymbv2.no_grad():
        for mode in ("train", "eval"):
            m.train(mode == "train")
            stds = stage_stds(m)
            last[scale, mode] = stds[-1]
            ax.semilogy(stds, "o-" if mode == "train" else "s--", ms=3, label=f"conv weights x{scale}, {mode} mode")
            print(f"scale {scale}, {mode:5s} mode: std after the last stage = {stds[-1]:.3g}")
ax.set_xlabel("stage of model.features"); ax.set_ylabel("activation std (log)"); ax.grid(alpha=0.3)
ax.legend(fontsize=8); ax.set_title("MobileNetV2 at initialisation")
plt.tight_layout(); plt.show()
print(f"input std {xb.data.std():.3g}; eval mode, last stage: std with torchvision's init / with x0.3 = "
      f"{last[1.0, 'eval'] / last[0.3, 'eval']:.3g}")
assert abs(last[1.0, "train"] / last[0.3, "train"] - 1) < 0.01         # the curves coincide
assert last[1.0, "eval"] < 0.5 * xb.data.std()                         # torchvision's init shrinks it
assert last[0.3, "eval"] < 0.3 * last[1.0, "eval"]                     # x0.3 ends far lower again
print("checked: train mode erases the scale; eval mode shrinks the signal, and x0.3 far more")

# %% [markdown]
r"""
In training mode the two curves coincide: BatchNorm has erased the scale. In eval mode
(no normalisation yet) even torchvision's initialisation shrinks the signal, since its
depthwise filters start small (fan_out counts $9C$), and the badly scaled network ends far
lower again (the printed ratio): the raw scale compounds stage after stage. With BatchNorm the
initialisation matters less for the forward pass, but it still sets the starting point and
the scale of the gradients; torchvision's choice is the one the published recipes were
tuned with.
"""

# %% [markdown]
r"""
## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see: it
prints `correct` or `not yet:` with a hint naming the case that fails.

### Exercise 6.1

Write `kaiming_std(shape, mode)`: the standard deviation Kaiming (He) initialisation gives a
weight of this shape in a ReLU network, $\sqrt{2/\text{fan}}$. A conv weight has shape
$(C_o, C_i/\text{groups}, k_h, k_w)$, a Linear weight $(\text{out}, \text{in})$ (a kernel of
area 1); `mode` is `"fan_in"` or `"fan_out"`, counted as PyTorch does (see the introduction:
the depthwise case is the one to get right).
"""

# %%
from tinymbv2.exercises import check_kaiming_std

def kaiming_std(shape, mode):
    """std = sqrt(2 / fan) for a weight of this shape; mode is "fan_in" or "fan_out"."""
    raise NotImplementedError("your code here")

check_kaiming_std(kaiming_std)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def kaiming_std(shape, mode):
    area = math.prod(shape[2:])                   # 1 for a Linear weight
    fan = (shape[1] if mode == "fan_in" else shape[0]) * area
    return math.sqrt(2 / fan)
```

For a depthwise weight $(144, 1, 3, 3)$: fan_in $= 9$ gives $\sqrt{2/9} \approx 0.47$,
fan_out $= 9 \cdot 144$ gives $\approx 0.039$, twelve times smaller. The BatchNorm after each
depthwise conv undoes the difference in training mode (section 6.3).

</details>

### Exercise 6.2

Write `init_like_torchvision(model, rng)`: re-initialise every layer of a MobileNetV2 in place
as torchvision does, drawing from the `np.random.Generator` `rng`: each convolution's weight
from $\mathcal{N}(0, 2/\text{fan_out})$, each BatchNorm's $\gamma$ to 1 and $\beta$ to 0, the
Linear layer's weight from $\mathcal{N}(0, 0.01^2)$ and its bias to 0. Write the values into
`layer.weight.data[...]` yourself rather than calling `nn.init`. The check starts from a model
whose every parameter is 0.7 and judges each layer by the statistics of what you drew.
"""

# %%
from tinymbv2.exercises import check_init_like_torchvision

def init_like_torchvision(model, rng):
    """Re-initialise model (a MobileNetV2) in place, as torchvision does, drawing from rng."""
    raise NotImplementedError("your code here")

check_init_like_torchvision(init_like_torchvision)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def init_like_torchvision(model, rng):
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d):
            out, _, kh, kw = layer.weight.shape
            layer.weight.data[...] = rng.normal(0.0, math.sqrt(2 / (out * kh * kw)), layer.weight.shape)
        elif isinstance(layer, nn.BatchNorm2d):
            layer.weight.data[...] = 1.0
            layer.bias.data[...] = 0.0
        elif isinstance(layer, nn.Linear):
            layer.weight.data[...] = rng.normal(0.0, 0.01, layer.weight.shape)
            layer.bias.data[...] = 0.0
```

`model.reset_parameters(rng)` does the same with `nn.init.kaiming_normal_(w, mode="fan_out")`.
The classifier's small weights make the first logits nearly equal, so the first loss is close
to $\log K$, the loss of a uniform guess.

</details>
"""
