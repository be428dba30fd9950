# %% [markdown]
r"""
# 18. Deployment: ONNX and int8

[Chapter 14](../14_inference/) made inference cheaper *inside* tinymbv2: BatchNorm folded
into the convolutions (14.1), blocks computed in slices or bands, layers fused into single
ops. This chapter takes the trained network *out* of tinymbv2. First as a file another
runtime reads: an **ONNX graph**, run by **onnxruntime** (18.1, 18.2). Then in **8 bits**:
every weight an int8 integer and every activation a uint8 one, which is how MobileNetV2 is
meant to run on a phone (the paper's section 3.2 chooses ReLU6 "because of its robustness
when used with low-precision computation").

The pieces, each checked by the cell beside it: BatchNorm folding derived again, and the
library's `fold_bn` against the unfolded layer (18.3); quantization and dequantization by
hand (18.4); calibration, with three ways to choose an activation's range (18.5); what a
bounded activation buys, and the per-tensor failure the benchmarks found (18.6);
quantization-aware training through the straight-through estimator (18.7); the network run
in integers against onnxruntime's int8 run of the same file (18.8); file sizes and speed
(18.9). The code is `tinymbv2.export` (folding, the ONNX writer) and `tinymbv2.quant`
(quantization); every number in the prose is printed or asserted by the cell beside it,
except those quoted from the benchmark pages, which say so.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import tempfile
import time
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import Tensor, nn
from tinymbv2.data import load_dataset
from tinymbv2.evaluation import evaluate
from tinymbv2.export import fold_bn, to_onnx
from tinymbv2.quant import (Int8Net, calibrate, choose_qparams, fake_quantize, quant_range,
                            quantize_model, to_qdq_onnx)
from tinymbv2.train import TrainConfig, load_trained, run_training

work = Path(tempfile.mkdtemp(prefix="ch18_"))      # every file this chapter writes

# %% [markdown]
r"""
## 18.0 A network to deploy

Two small classifiers of the 8x8 digits (MobileNetV2-0.5 with the small-input stem, one
channel, the recipe of the Quantization benchmark on the digits: 30 epochs of one-cycle SGD
at 0.05), the same in everything but the activation: the paper's ReLU6 in one, ReLU in the
other (`TrainConfig(activation=...)`). 18.6 compares them; the rest of the chapter deploys
the ReLU6 one. Under a minute each at full size.
"""

# %%
epochs = 3 if TINYMBV2_FAST else 30
nets, configs = {}, {}
for activation in ("relu6", "relu"):
    config = TrainConfig(dataset="digits", epochs=epochs, lr=0.05, activation=activation,
                         out=str(work / activation))
    start = time.perf_counter()
    metrics = run_training(config, progress=False)
    nets[activation], configs[activation] = load_trained(f"{config.out}/model.npz")
    print(f"{activation:5s}: test accuracy {metrics['test_accuracy']:.4f} after {epochs} epochs "
          f"({time.perf_counter() - start:.0f} s)")

cfg = configs["relu6"]
data = load_dataset("digits", None, None, channels=1)
mean = np.asarray(cfg["norm_mean"], np.float32).reshape(1, -1, 1, 1)
std = np.asarray(cfg["norm_std"], np.float32).reshape(1, -1, 1, 1)
train_x = ((data.train.images - mean) / std).astype(np.float32)
test_x = ((data.test.images - mean) / std).astype(np.float32)
train_y, test_y = data.train.labels, data.test.labels
calib = train_x[:512]                                  # the calibration images (18.5)
model = nets["relu6"]
print(f"test images {test_x.shape}, calibration images {calib.shape}")

def accuracy(logits):
    return float(np.mean(np.asarray(logits).argmax(1) == test_y))

with tinymbv2.no_grad():
    ours = model(Tensor(test_x)).numpy()
float_acc = {act: evaluate(net, test_x, test_y, fuse=False)["accuracy"] for act, net in nets.items()}
print("float32 test accuracy:", {k: round(v, 4) for k, v in float_acc.items()})

# %% [markdown]
r"""
## 18.1 The network as an ONNX graph

ONNX stores a network as a graph of standard operators (`Conv`, `Clip`, `Add`, `Gemm`, ...),
each with its inputs, outputs and attributes, and the weights as constant tensors
("initializers"). `to_onnx(model, path, input_shape)` walks the model module by module and
writes one node per operation, with every BatchNorm folded into its convolution (18.3), so a
BatchNormalization node never appears. ReLU6 is `Clip(x, 0, 6)`; a residual is an `Add`.
The input shape is fixed in the file.
"""

# %%
import onnx

onnx_path = to_onnx(model, work / "digits.onnx", input_shape=test_x.shape)
graph = onnx.load(onnx_path).graph
ops = [node.op_type for node in graph.node]
print(f"{onnx_path.name}: {len(graph.node)} nodes, {len(graph.initializer)} weight tensors")
print("nodes per operator:", {op: ops.count(op) for op in dict.fromkeys(ops)})
for node in graph.node[:5]:
    print(f"  {node.op_type:5s} {node.name:22s} in {list(node.input)} -> {list(node.output)}")
assert "BatchNormalization" not in ops and ops.count("Conv") == 52

# %% [markdown]
r"""
Fifty-two convolutions, one per Conv2d + BatchNorm2d pair of the model. The drawing below is
the file itself, read back with `onnx.load`: one column per group of nodes whose names share
a prefix (the stem `features.0`, each inverted residual block `features.1` to
`features.17`, the last 1x1 convolution `features.18`, the pooling and the classifier),
every node a box coloured by its operator, each edge an input the node reads. The
convolution boxes give the weight's shape (output channels, input channels per group, kernel)
and `dw` for a depthwise one (a `group` attribute above 1). The grey arrows come from the
previous column (block 10's from the end of the top row): the block's input, read by its
first convolution and, in a block with a residual connection, by its `Add` too.
"""

# %%
COLOURS = {"Conv": "#9cc3e6", "Clip": "#f6c58f", "Add": "#a9d18e", "GlobalAveragePool": "#d5a6bd",
           "Flatten": "#d9d9d9", "Gemm": "#ffe699"}

def draw_onnx(graph, axes, per_row=10):
    """Draw an ONNX graph: a column per name prefix (``per_row`` columns to a panel of
    ``axes``), a box per node, an arrow per input read from another node."""
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    group = lambda name: ".".join(name.split(".")[:2]) if name.startswith("features") else "head"
    columns = list(dict.fromkeys(group(n.name) for n in graph.node))
    where, made_by, rows = {}, {}, {c: 0 for c in columns}
    for node in graph.node:
        col = columns.index(group(node.name))
        where[node.name] = (col // per_row, (col % per_row) * 1.6, -rows[group(node.name)] * 1.0)
        rows[group(node.name)] += 1
        for out in node.output:
            made_by[out] = node.name
    for node in graph.node:
        panel, x, y = where[node.name]
        ax = axes[panel]
        label = node.op_type.replace("GlobalAveragePool", "GAP")
        w = weights.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "Conv" and w is not None:
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            label += f"\n{w[0]}x{w[1]}x{w[2]}x{w[3]}" + (" dw" if groups > 1 else "")
        if node.op_type == "Gemm" and w is not None:
            label += f"\n{w[0]}x{w[1]}"
        ax.add_patch(plt.Rectangle((x - 0.66, y - 0.38), 1.32, 0.76, fc=COLOURS.get(node.op_type, "white"),
                                   ec="k", lw=0.6))
        ax.text(x, y, label, ha="center", va="center", fontsize=7)
        for name in node.input:
            if name not in made_by:
                continue                                   # the graph's input or a weight
            source_panel, sx, sy = where[made_by[name]]
            if (source_panel, sx) == (panel, x):           # inside the column
                ax.annotate("", (x, y + 0.38), (sx, sy - 0.38), arrowprops=dict(arrowstyle="->", lw=0.6))
            elif source_panel == panel:                    # from an earlier column: the block's input
                ax.annotate("", (x - 0.66, y), (sx + 0.66, sy),
                            arrowprops=dict(arrowstyle="->", lw=0.5, color="grey"))
            else:                                          # from the panel above
                ax.annotate("", (x - 0.66, y), (x - 0.95, y), arrowprops=dict(arrowstyle="->", lw=0.5,
                                                                               color="grey"))
    for panel, ax in enumerate(axes):
        shown = columns[panel * per_row:(panel + 1) * per_row]
        ax.set_xticks([i * 1.6 for i in range(len(shown))])
        ax.set_xticklabels([c.replace("features.", "features.\n") for c in shown], fontsize=8)
        ax.set_xlim(-1.0, (per_row - 1) * 1.6 + 0.8); ax.set_ylim(-max(rows.values()) + 0.4, 0.6)
        ax.set_yticks([])
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)

fig, axes = plt.subplots(2, 1, figsize=(11, 9.5))
draw_onnx(graph, axes)
fig.suptitle(f"{onnx_path.name}: the ONNX graph of the digits classifier, BatchNorm folded "
             f"({len(graph.node)} nodes; the stem features.0, blocks 1-17, the last conv 18, the head)",
             fontsize=10)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
## 18.2 Running it in onnxruntime

onnxruntime reads the file and runs it with its own CPU kernels: nothing of tinymbv2 is
involved. Same images in, the logits out; the largest difference from tinymbv2's logits
(the unfolded model, layer by layer) is float32 rounding, the folding's and the two
runtimes' different orders of summation.
"""

# %%
import onnxruntime as ort

def session(path, threads=2, optimise=True):
    """An onnxruntime CPU session on ``path`` (as benchmarks/onnx_inference.py makes it)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

float_session = session(onnx_path)
theirs = float_session.run(None, {"input": test_x})[0]
diff = np.abs(theirs - ours).max()
print(f"onnxruntime {ort.__version__}: logits {theirs.shape}, largest |logit| {np.abs(ours).max():.2f}, "
      f"max |onnxruntime - tinymbv2| = {diff:.1e}")
print(f"predictions that differ: {int(np.sum(theirs.argmax(1) != ours.argmax(1)))} of {len(test_y)}; "
      f"accuracy {accuracy(theirs):.4f} (tinymbv2: {accuracy(ours):.4f})")
assert diff < 1e-4 * max(1.0, np.abs(ours).max())
print("checked: the two agree to 1e-4 of the largest logit")

# %% [markdown]
r"""
## 18.3 BatchNorm folding, derived once more

At inference a BatchNorm is a fixed affine map per channel. Output channel $o$ of a
convolution is $z_o = w_o * x + b_o$; the BatchNorm after it computes

$$
y_o = \gamma_o \frac{z_o - \mu_o}{\sqrt{\sigma^2_o + \epsilon}} + \beta_o
    = s_o\,(w_o * x) + s_o\,(b_o - \mu_o) + \beta_o,
\qquad s_o = \frac{\gamma_o}{\sqrt{\sigma_o^2 + \epsilon}},
$$

because the convolution is linear: $s_o (w_o * x) = (s_o w_o) * x$. So the pair is one
convolution with weight $w'_o = s_o w_o$ and bias $b'_o = s_o (b_o - \mu_o) + \beta_o$ (14.1
wrote the same by hand; Exercise 14.1 asks for it). Two things matter for what follows: the
scale is per *output* channel, and it is $1/\sqrt{\sigma^2 + \epsilon}$, **large when a
channel's variance is tiny**, which 18.6 comes back to. `fold_bn` is the library's
function, which the ONNX writer and the quantizer call; the cell checks it against the
unfolded layer pair of block 2's depthwise convolution, in float64.
"""

# %%
import copy
import tinymbv2.functional as F

conv, bn = model.features[2].conv[1][0], model.features[2].conv[1][1]      # depthwise conv, its BatchNorm
w, b = fold_bn(conv.weight.data.astype(np.float64), None, bn.running_mean.data, bn.running_var.data,
               bn.weight.data, bn.bias.data, bn.eps)
h = np.random.default_rng(18).standard_normal((4, conv.in_channels, 8, 8))
pair = copy.deepcopy(nn.Sequential(conv, bn)).double().eval()     # a float64 copy of the two layers
with tinymbv2.no_grad():
    unfolded = pair(Tensor(h)).numpy()
    folded = F.conv2d(Tensor(h), Tensor(w), Tensor(b), conv.stride, conv.padding, conv.dilation,
                      conv.groups).numpy()
err = np.abs(folded - unfolded).max()
s = bn.weight.data / np.sqrt(bn.running_var.data + bn.eps)
print(f"{conv}: scales s_o from {s.min():.3f} to {s.max():.3f}")
print(f"max |conv(x; w', b') - BN(conv(x; w))| = {err:.1e}  (outputs up to {np.abs(unfolded).max():.1f}, float64)")
assert err < 1e-12
print("checked: the folded convolution is the pair, to float64 rounding")

# %% [markdown]
r"""
## 18.4 Quantization and dequantization by hand

An 8-bit tensor stores integers $q$ and one float **scale** $s$ and integer **zero point**
$z$; the value $q$ stands for is $(q - z)\,s$. Quantizing a float $x$:

$$
q = \mathrm{clamp}\big(\mathrm{round}(x / s) + z,\ q_\min,\ q_\max\big),\qquad
\hat x = (q - z)\, s .
$$

For a range $[a, b]$ (first widened to hold 0, so that 0, the zero padding, is stored
exactly): **symmetric** int8 ($[-128, 127]$, weights) takes $z = 0$ and
$s = \max(-a, b) / 127.5$; **affine** uint8 ($[0, 255]$, activations) takes
$s = (b - a)/255$ and $z = -\mathrm{round}(a / s)$. Inside the range the rounding error
$|\hat x - x|$ is at most $s/2$; outside it, the clamp's error is as large as the distance to
the range. The cell does both schemes by hand on a small tensor and compares them with
`choose_qparams` and `fake_quantize`.
"""

# %%
x = np.array([-1.3, -0.41, 0.0, 0.07, 0.5, 0.9999, 2.2], np.float32)

a, b = min(x.min(), 0), max(x.max(), 0)
s_sym = max(-a, b) / 127.5                                     # int8, symmetric
q_sym = np.clip(np.rint(x / s_sym), -128, 127)
s_aff = (b - a) / 255                                          # uint8, affine
z_aff = int(np.clip(0 - np.rint(a / s_aff), 0, 255))
q_aff = np.clip(np.rint(x / s_aff) + z_aff, 0, 255)
for name, q, s_, z_ in (("int8 symmetric", q_sym, s_sym, 0), ("uint8 affine  ", q_aff, s_aff, z_aff)):
    xhat = (q - z_) * s_
    print(f"{name}: s = {s_:.6f}, z = {z_:3d}, q = {q.astype(int).tolist()}")
    print(f"{'':16s}x^ = {[round(float(v), 4) for v in xhat]}, max |x^ - x| = {np.abs(xhat - x).max():.5f} "
          f"(s/2 = {s_ / 2:.5f})")
    assert np.abs(xhat - x).max() <= s_ / 2 + 1e-6

for dtype, symmetric, (s_, z_) in (("int8", True, (s_sym, 0)), ("uint8", False, (s_aff, z_aff))):
    scale, zero = choose_qparams(x.min(), x.max(), dtype, symmetric=symmetric)
    lib = fake_quantize(Tensor(x), scale, zero, *quant_range(dtype)).numpy()
    assert np.isclose(scale, s_, rtol=1e-6) and zero == z_ and np.allclose(lib, (np.clip(
        np.rint(x / s_) + z_, *quant_range(dtype)) - z_) * s_, atol=1e-6)
print("checked: choose_qparams and fake_quantize give the hand-computed scales, zero points and values")

clipped = fake_quantize(Tensor(np.array([3.0, 10.0], np.float32)), s_aff, z_aff, 0, 255).numpy()
print(f"outside the range [{a:.2f}, {b:.2f}]: 3.0 -> {clipped[0]:.4f}, 10.0 -> {clipped[1]:.4f} (the clamp)")

# %% [markdown]
r"""
So the range decides everything: a wider range means a coarser step $s$ for every value, a
narrower one clips the values outside it. For a network's **weights** the range is known
(they are fixed after training), and the scale is chosen per output channel (per-channel) or
once per layer (per-tensor). For its **activations** the range depends on the input.

## 18.5 Calibration: choosing the activations' ranges

`quantize_model(model)` returns a *quantized view* of the network: every convolution with
its BatchNorm folded and its weight fake-quantized to int8 per output channel, and an
`ActQuant` after every tensor an int8 network would store (the input, each activation's
output, each projection's output, each residual sum). A ReLU6's range is known, $[0, 6]$; the
others' are found by **calibration**: `calibrate(view, images)` runs 512 training images
through the view, an observer records each tensor, and its range fixes the scale. Three
observers:

* **min/max**: the smallest and largest value seen; nothing is clipped, but one rare large
  value stretches the step for all;
* **percentile** (99.99th): ignores the rarest values, clipping them;
* **MSE**: the clipping range that minimises the squared quantization error over what was
  seen, trading clipping against rounding.

The cell calibrates the ReLU6 network each way and prints the first observed tensors'
scales (the input, and block 1's projection output), and the test accuracy of each.
"""

# %%
observers = ("minmax", "percentile", "mse")
views = {obs: calibrate(quantize_model(model, observer=obs), calib) for obs in observers}
acc_obs = {}
for obs, view in views.items():
    observed = [m for m in view.act_quants() if m.observer is not None]
    ranges = ", ".join(f"[{m.observer.range()[0]:.2f}, {m.observer.range()[1]:.2f}] s={float(m.scale):.4f}"
                       for m in observed[:2])
    acc_obs[obs] = evaluate(view, test_x, test_y, fuse=False)["accuracy"]
    print(f"{obs:10s}: {len(observed)} observed tensors, the first two: {ranges}; "
          f"accuracy {acc_obs[obs]:.4f}")
fixed = [m for m in views["minmax"].act_quants() if m.observer is None]
print(f"{len(fixed)} ReLU6 outputs need no calibration: range [0, 6], scale 6/255 = "
      f"{float(fixed[0].scale):.5f}, zero point {int(fixed[0].zero_point)}")
print(f"float32 accuracy {float_acc['relu6']:.4f}; largest drop {float_acc['relu6'] - min(acc_obs.values()):+.4f}")
if not TINYMBV2_FAST:
    assert float_acc["relu6"] - min(acc_obs.values()) <= 2 / len(test_y) + 1e-9
    print("checked: no observer costs more than two of the test images")

# %% [markdown]
r"""
At full size no observer costs this network more than two of the 359 test images (one image
is 0.0028; the cell asserts it). The Quantization section of the [benchmarks](../../benchmarks/) reports
the same measurement at full size on mnist5k and on the digits, with both networks: no
observer lost more than 0.0028 there with per-channel weights.

## 18.6 Why a bounded activation helps

The ReLU6 network's 35 activation outputs need no calibration at all: their range is $[0, 6]$
by construction, so the step is $6/255 \approx 0.024$ whatever the input. A ReLU's output is
unbounded; its range must be observed, and it is as wide as the largest value the calibration
images happen to produce. The cell observes the ReLU network's 35 activation outputs with
min/max and compares their steps with ReLU6's fixed one.
"""

# %%
def activation_quants(view, kind):
    """The ActQuant right after each activation module of type ``kind`` in the view."""
    found = []
    for seq in [m for m in view.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq)
        found += [q for act, q in zip(children, children[1:]) if type(act) is kind]
    return found

relu_view = calibrate(quantize_model(nets["relu"]), calib)
relu_max = np.array([q.observer.range()[1] for q in activation_quants(relu_view, nn.ReLU)])
relu6_seen = calibrate(quantize_model(model, relu6_range=False), calib)   # ReLU6's outputs observed too
relu6_max = np.array([q.observer.range()[1] for q in activation_quants(relu6_seen, nn.ReLU6)])
print(f"ReLU network:  the 35 outputs' observed maxima from {relu_max.min():.1f} to {relu_max.max():.1f} "
      f"(median {np.median(relu_max):.1f}): steps {relu_max.min() / 255:.3f} to {relu_max.max() / 255:.3f}")
print(f"ReLU6 network: the observed maxima from {relu6_max.min():.1f} to {relu6_max.max():.1f}; the step is "
      f"fixed at 6/255 = {6 / 255:.3f}")
print(f"ReLU outputs whose step is coarser than ReLU6's: {int(np.sum(relu_max > 6))} of {len(relu_max)}")
assert len(relu_max) == len(relu6_max) == 35 and relu6_max.max() <= 6

fig, ax = plt.subplots(figsize=(10, 3))
ax.bar(np.arange(35) - 0.2, relu_max, 0.4, label="ReLU network: observed max (min/max calibration)")
ax.bar(np.arange(35) + 0.2, relu6_max, 0.4, label="ReLU6 network: observed max")
ax.axhline(6, color="k", lw=0.8, ls="--", label="ReLU6's fixed range: 6")
ax.set_xlabel("activation output, in forward order"); ax.set_ylabel("range's upper end")
ax.set_ylim(0, 1.3 * max(relu_max.max(), 6)); ax.legend(fontsize=8, ncol=3, loc="upper center")
plt.tight_layout(); plt.show()

relu_acc = evaluate(relu_view, test_x, test_y, fuse=False)["accuracy"]
print(f"per-channel int8, min/max: ReLU6 network {acc_obs['minmax']:.4f} (float {float_acc['relu6']:.4f}), "
      f"ReLU network {relu_acc:.4f} (float {float_acc['relu']:.4f})")

# %% [markdown]
r"""
The ReLU network's ranges are set by whatever its largest values were, layer by layer; those
wider than ReLU6's $[0, 6]$ (the count is printed) are stored with a coarser step, and a value
beyond the calibration images' largest is clipped; ReLU6's bound also
means a deployed network cannot meet an activation outside its calibrated range there. At 8
bits with per-channel weights neither network loses much on this task: the accuracies just
printed, and the benchmark's mnist5k and digits tables say the same (no per-channel row there
drops by more than 0.0028).
One seed of each network cannot test the paper's claim; fewer bits or more seeds would.

### The per-tensor collapse

What the benchmarks did find is a failure of **per-tensor** weights, and it comes from
18.3's folding, not from the activation. Quoted from docs/benchmarks.md (Quantization; measured
by `python -m benchmarks.quant_accuracy` on mnist5k, not computed here): with one int8 scale
per layer the ReLU6 network fell from 0.9840 to 0.1000, because "one channel of block 1's
depthwise layer [...] had a constant input over the training set, a running variance of
8e-13, so folding its BatchNorm multiplied that channel's weights by
$\gamma / \sqrt{\sigma^2 + \epsilon}$ with $\sigma^2 \approx 0$: its largest folded weight
is 420.7 against a median channel's 0.61. One scale for the whole layer then has a step of
420.7 / 127.5 = 3.3, and every other channel's weights round to 0."

The digits network trained here has no such channel; the cell makes one, as training made
it there. It kills one stem channel (its BatchNorm's $\gamma = 0$, $\beta = -1$: ReLU6 then
outputs 0 for every image), the one whose loss the network feels least: each of the stem's
channels is killed in turn and the network scored on the calibration images (a channel
that is small on average may still carry what the digits need), so block 1's depthwise
filter on that channel sees a constant input, and gives that filter's
BatchNorm the statistics training would have recorded (mean 0, variance 8e-13). How large the
folded weights get then depends on that BatchNorm's $\gamma$, which the float network never
feels (its constant input minus its mean is 0, so the channel outputs $\beta$ whatever
$\gamma$ is): training leaves it where it happens to be. The cell quantizes the network per
tensor and per channel twice: with $\gamma$ as trained, and with $\gamma$ set so that the
largest folded weight is the benchmark's 420.7.
"""

# %%
def killed(channel):
    """A copy of the model with this stem channel dead: ReLU6(0 * x - 1) = 0 everywhere."""
    net = copy.deepcopy(model)
    net.features[0][1].weight.data[channel], net.features[0][1].bias.data[channel] = 0.0, -1.0
    return net

calib_y = train_y[:512]
kept = [evaluate(killed(c), calib, calib_y, fuse=False)["accuracy"]
        for c in range(model.features[0][0].out_channels)]
channel = int(np.argmax(kept))                                          # the loss felt least
print(f"calibration accuracy with each stem channel killed: {min(kept):.3f} to {max(kept):.3f}; "
      f"channel {channel} is killed")
planted = killed(channel)
dw_conv, dw_bn = planted.features[1].conv[0][0], planted.features[1].conv[0][1]
dw_bn.running_mean.data[channel], dw_bn.running_var.data[channel] = 0.0, 8e-13

def folded_maxima():
    """Each output channel's largest |folded weight| of block 1's depthwise layer."""
    w, _ = fold_bn(dw_conv.weight.data, None, dw_bn.running_mean.data, dw_bn.running_var.data,
                   dw_bn.weight.data, dw_bn.bias.data, dw_bn.eps)
    return np.abs(w).reshape(len(w), -1).max(1), w

def scores(net):
    return {"float32": evaluate(net, test_x, test_y, fuse=False)["accuracy"],
            **{scheme: evaluate(calibrate(quantize_model(net, weights=scheme), calib), test_x, test_y,
                                fuse=False)["accuracy"] for scheme in ("per_tensor", "per_channel")}}

trained_max = folded_maxima()[0][channel]
collapse = {}
for target in (trained_max, 420.7):          # as it comes out here; the benchmark's network's value
    dw_bn.weight.data[channel] *= target / folded_maxima()[0][channel]   # the dead channel's gamma
    maxima, w_dw = folded_maxima()
    step = maxima.max() / 127.5
    collapse[round(float(target), 1)] = result = scores(planted)
    print(f"dead channel {channel}'s largest folded weight {maxima[channel]:6.1f} (the median channel's "
          f"{np.median(maxima):.2f}): one scale for the layer has the step {step:.2f}, and "
          f"{np.mean(np.abs(w_dw) < step / 2):.0%} of the layer's weights round to 0")
    print("    test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
print(f"(the trained model, without the dead channel: float32 {float_acc['relu6']:.4f})")
if not TINYMBV2_FAST:
    assert all(abs(r["float32"] - float_acc["relu6"]) < 0.02 for r in collapse.values())
    assert all(r["per_channel"] > r["float32"] - 0.02 for r in collapse.values())
    assert collapse[420.7]["per_tensor"] < collapse[420.7]["float32"] - 0.3
    print("checked: the dead channel costs the float network under 0.02 and per-channel weights under "
          "0.02; at the benchmark's 420.7, per-tensor weights lose over 0.3")

# %% [markdown]
r"""
The float network hardly notices the dead channel (it computes a constant there), but its
folded weights are hundreds of times those of the other channels of the layer, and a single
scale for all of them rounds most of the others' weights to zero: the larger the dead
channel's folded weights, the more (the two rows above). One scale per output channel (the
default, and what onnxruntime's `quantize_static(per_channel=True)` uses) gives each channel
its own step, and nothing measurable is lost; this is the known reason MobileNet's depthwise
layers are quantized per channel (Krishnamoorthi 2018).

## 18.7 Quantization-aware training and the straight-through estimator

If quantization costs accuracy, the network can be trained *through* it: the forward pass
uses the fake-quantized weights and activations, so the loss sees what the int8 network will
compute. The obstacle is the rounding, whose derivative is zero almost everywhere: the true
gradient of $\hat x$ with respect to $x$ would stop all learning. The **straight-through
estimator** (Bengio et al. 2013) passes the gradient through unchanged where $x$ was inside
the range and stops it where $x$ was clipped:

$$
\frac{\partial L}{\partial x} \approx \frac{\partial L}{\partial \hat x}\,
\big[q_\min \le \mathrm{round}(x / s) + z \le q_\max\big].
$$

The cell checks `fake_quantize`'s backward against PyTorch's
`fake_quantize_per_tensor_affine` on a random tensor and upstream gradient, then fits a toy
linear model whose weights are fake-quantized to a coarse grid, once with the STE and once
with the true (zero) gradient.
"""

# %%
import torch

rng = np.random.default_rng(7)
xs = rng.uniform(-3, 3, (5, 6)).astype(np.float32)
g = rng.standard_normal(xs.shape).astype(np.float32)
t = Tensor(xs, requires_grad=True)
out = fake_quantize(t, 0.02, 10, 0, 255)
out.backward(g)
pt = torch.tensor(xs, requires_grad=True)
pout = torch.fake_quantize_per_tensor_affine(pt, 0.02, 10, 0, 255)
pout.backward(torch.tensor(g))
print(f"forward: max |ours - torch| = {np.abs(out.numpy() - pout.detach().numpy()).max():.1e}; "
      f"gradient: {np.abs(t.grad - pt.grad.numpy()).max():.1e}; "
      f"{int(np.sum(t.grad == 0))} of {xs.size} entries clipped (their gradient 0)")
assert np.array_equal(t.grad, pt.grad.numpy()) and np.allclose(out.numpy(), pout.detach().numpy(), atol=1e-6)

# a toy: y = X w_true, with w fake-quantized to a grid of step 0.25, fitted from w = 0
X = rng.standard_normal((256, 4)).astype(np.float32)
w_true = np.array([1.0, -0.5, 0.75, 2.0], np.float32)
y = X @ w_true
for name, straight_through in (("STE", True), ("true gradient (0)", False)):
    w_ = Tensor(np.zeros(4, np.float32), requires_grad=True)
    for step_ in range(200):
        w_q = fake_quantize(w_, 0.25, 0, -128, 127)
        loss = ((Tensor(X) @ w_q - Tensor(y)) ** 2).mean()
        w_.grad = None
        loss.backward()
        grad = w_.grad if straight_through else np.zeros_like(w_.grad)
        w_.data -= 0.05 * grad
    print(f"{name:18s}: loss {float(loss.numpy()):.4f}, quantized weights "
          f"{fake_quantize(w_, 0.25, 0, -128, 127).numpy().tolist()}")

# %% [markdown]
r"""
With the STE the latent float weights move, and their quantized values land on the grid
points of $w_\text{true}$ (all four lie on the 0.25 grid, so the loss reaches 0); with the
true gradient nothing moves. Quantization-aware training is this on the whole network: the
quantized view is a module like any other, and training it moves the folded float weights
(the activations' scales stay those of calibration). A few steps on the per-channel view of
the ReLU6 network (one epoch of 64-image batches at full size), SGD at a small rate, as the
benchmark's QAT epoch:
"""

# %%
from tinymbv2 import optim

qat = calibrate(quantize_model(model), calib)
before = evaluate(qat, test_x, test_y, fuse=False)["accuracy"]
opt = optim.SGD(qat.parameters(), lr=0.002, momentum=0.9)
order = np.random.default_rng(0).permutation(len(train_x))
steps = 5 if TINYMBV2_FAST else len(train_x) // 64          # full size: one epoch, as the benchmark
qat.train()
losses = []
for i in range(steps):
    idx = order[i * 64:(i + 1) * 64]
    loss = F.cross_entropy(qat(Tensor(train_x[idx])), train_y[idx])
    opt.zero_grad(); loss.backward(); opt.step()
    losses.append(float(loss.numpy()))
qat.eval()
reached = sum(np.abs(p.grad).max() > 0 for p in qat.parameters() if p.grad is not None)
after = evaluate(qat, test_x, test_y, fuse=False)["accuracy"]
print(f"{steps} QAT steps: training loss {losses[0]:.4f} -> {losses[-1]:.4f}; a non-zero gradient "
      f"reached {reached} of {len(list(qat.parameters()))} parameters")
print(f"test accuracy of the int8 view: {before:.4f} before, {after:.4f} after")
assert reached == len(list(qat.parameters()))

# %% [markdown]
r"""
Here quantization cost almost nothing to begin with, so QAT has little to recover (the
benchmark's epoch of QAT moved the digits networks by one test image). It earns its cost
where post-training quantization loses: fewer bits, or a network whose ranges do not fit
8 bits.

## 18.8 The int8 network, and onnxruntime's

The view computes *in float* what an int8 network computes. Two programs compute it in
integers:

* `to_qdq_onnx(view, path, shape)` writes the view as a **QDQ** ONNX file: each weight as
  int8 integers followed by a `DequantizeLinear` node, each stored activation through a
  `QuantizeLinear` -> `DequantizeLinear` pair (uint8, one scale). onnxruntime recognises
  `DequantizeLinear -> Conv -> QuantizeLinear` and runs it as its integer `QLinearConv`;
* `Int8Net.from_view(view)` runs the same integers on tinymbv2's own int8 kernels
  (`qlinear_conv2d`: int8 products summed in int32, then requantized with onnxruntime's
  rounding; the kernels are described in the [kernels guide](../../kernels/)).

The two are separate implementations of the same arithmetic; the cell compares their logits
and predictions on the test images, and both with the float view.
"""

# %%
view = views["minmax"]
qdq_path = to_qdq_onnx(view, work / "digits_int8.onnx", test_x.shape)
qdq_ops = [n.op_type for n in onnx.load(qdq_path).graph.node]
print(f"{qdq_path.name}: {len(qdq_ops)} nodes:", {op: qdq_ops.count(op) for op in dict.fromkeys(qdq_ops)})
int8_net = Int8Net.from_view(view)
ours8 = int8_net(test_x)
int8_session = session(qdq_path)                      # optimised: onnxruntime's integer kernels
theirs8 = int8_session.run(None, {"input": test_x})[0]
with tinymbv2.no_grad():
    sim = view(Tensor(test_x)).numpy()
agree = np.mean(ours8.argmax(1) == theirs8.argmax(1))
print(f"Int8Net vs onnxruntime int8: same prediction on {agree:.2%} of the test images; "
      f"median |logit difference| {np.median(np.abs(ours8 - theirs8)):.4f}, max {np.abs(ours8 - theirs8).max():.4f} "
      f"(logits up to {np.abs(theirs8).max():.1f})")
print(f"Int8Net vs the float view: same prediction on {np.mean(ours8.argmax(1) == sim.argmax(1)):.2%}")
print(f"accuracy: float32 {float_acc['relu6']:.4f}, view {accuracy(sim):.4f}, Int8Net {accuracy(ours8):.4f}, "
      f"onnxruntime int8 {accuracy(theirs8):.4f}")
assert agree >= 0.99
print("checked: tinymbv2's int8 network and onnxruntime's agree on at least 99% of the predictions")

# %% [markdown]
r"""
The integers agree wherever the same rounding is done in the same order; a logit differs
where a value lands on the other side of a rounding boundary in one of them (onnxruntime
fuses some nodes its own way; the cell prints how far apart the logits get). The float view
is near both, not equal: it rounds the same values, but sums in float.

## 18.9 What it buys: file sizes and speed

int8 weights take a quarter of float32's bytes. The files of this network: its float32
parameters, the float ONNX file, the QDQ file and the int8 network's `.npz`
(`Int8Net.save`):
"""

# %%
param_bytes = sum(p.data.nbytes for p in model.parameters())
npz_path = int8_net.save(work / "digits_int8.npz")
sizes = {"float32 parameters": param_bytes, onnx_path.name: onnx_path.stat().st_size,
         qdq_path.name: qdq_path.stat().st_size, npz_path.name: Path(npz_path).stat().st_size}
for name, size in sizes.items():
    print(f"{name:22s} {size / 1e6:6.3f} MB  ({size / param_bytes:.2f} of the float32 parameters)")
again = Int8Net.load(npz_path)
assert np.array_equal(again(test_x), ours8)
assert sizes[qdq_path.name] < 0.4 * sizes[onnx_path.name]
print("checked: the .npz reads back to the same logits; the QDQ file is under 0.4 of the float one")

# %% [markdown]
r"""
Speed, measured here, on whatever machine ran this page: the 359 test images in one batch
through five contestants, alternating after warm-up, medians of the repeats: tinymbv2's float
network as its fused view (14.4) and frozen (`tinymbv2.freeze`: the weights copied and each
block's kernel prepared once, as onnxruntime prepares its session; the same logits, to the
bit), tinymbv2's `Int8Net`, onnxruntime on the float file and onnxruntime on the QDQ file
(two threads each). The images are 8x8, so this measures a small
network on tiny maps; the full-size measurements quoted below are of MobileNetV2-1.0 at
224 px, and their ratios are not these.
"""

# %%
fused = tinymbv2.fuse(model)

def tinymbv2_float():
    with tinymbv2.no_grad():
        return fused(Tensor(test_x))

frozen = tinymbv2.freeze(model)
assert np.array_equal(frozen(test_x), tinymbv2_float().data)  # the fused view's logits

contestants = {"tinymbv2 float32 (fused)": tinymbv2_float,
               "tinymbv2 float32 (frozen)": lambda: frozen(test_x),
               "tinymbv2 Int8Net": lambda: int8_net(test_x),
               "onnxruntime float32": lambda: float_session.run(None, {"input": test_x}),
               "onnxruntime int8 (QDQ)": lambda: int8_session.run(None, {"input": test_x})}
for fn in contestants.values():
    fn(); fn()                                        # warm-up (Numba compiles on the first call)
times = {name: [] for name in contestants}
for _ in range(5 if TINYMBV2_FAST else 15):
    for name, fn in contestants.items():
        start = time.perf_counter(); fn(); times[name].append(time.perf_counter() - start)
medians = {name: float(np.median(t)) for name, t in times.items()}
base = medians["onnxruntime float32"]
print(f"{len(test_x)} images of 8x8, load average {os.getloadavg()[0]:.1f}:")
for name, t in medians.items():
    print(f"  {name:26s} {t * 1e3:7.2f} ms   {t / base:5.2f} x onnxruntime float32")
print(f"int8 / float32: tinymbv2 {medians['tinymbv2 Int8Net'] / medians['tinymbv2 float32 (fused)']:.2f}, "
      f"onnxruntime {medians['onnxruntime int8 (QDQ)'] / base:.2f}")

fig, ax = plt.subplots(figsize=(7, 2.4))
ax.barh(list(medians), [t * 1e3 for t in medians.values()],
        color=["#48c", "#6ad", "#8b4", "#999", "#bbb"])
ax.invert_yaxis(); ax.set_xlabel(f"ms for {len(test_x)} 8x8 images (median)")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
The cell prints this run's numbers and the machine's load average at the time; which
contestant wins at this size depends on the machine and on how busy it is. The controlled measurements at full size are in the
documentation, quoted here with their source (not computed by this page):

**Float32, MobileNetV2-1.0 at 224 px** (docs/benchmarks.md, "Deployment: float32 inference
against onnxruntime", `python -m benchmarks.onnx_inference`: AMD EPYC host with AVX-512,
2 cores, 2 threads each, medians of 41, 2026-12-07, commit `2a98be0`, two of its four runs;
times, and in brackets the ratio to onnxruntime's):

| batch | onnxruntime | tinymbv2 frozen | tinymbv2 fused | PyTorch |
|---|---|---|---|---|
| 1 | 5.05 ms | 4.71 ms (0.93x) | 8.64 ms (1.71x) | 12.48 ms (2.47x) |
| 1 | 5.28 ms | 4.72 ms (0.89x) | 8.78 ms (1.66x) | 12.72 ms (2.41x) |
| 8 | 31.90 ms | 28.42 ms (0.89x) | 33.75 ms (1.06x) | 64.03 ms (2.01x) |
| 8 | 32.62 ms | 28.70 ms (0.88x) | 33.87 ms (1.04x) | 69.59 ms (2.13x) |

Frozen, tinymbv2 runs ahead of onnxruntime at both sizes (0.88-0.94x over the four runs),
and both well ahead of PyTorch. The fused view computes the same logits, bit for bit, and
is slower by what freezing does once instead of at every call: walking the modules,
checking each layer pattern, going through autograd's `Function`s, checking each kernel's
weights, packing them and turning each BatchNorm into per-channel scales. On one image that
bookkeeping is close to half of the fused view's time, which is why onnxruntime prepares
its graph once per session and `tinymbv2.freeze` does the same (the frozen model also runs
the stem and the first block in one pass, which the fused view does not). The benchmark
page shows, step by step, what is still slower than onnxruntime's nodes (the first step,
the 7x7 tail and the classifier).

**Int8 against float32, layer by layer** (docs/kernels.md, "Int8 inference", `python -m
benchmarks.int8_ops`: six layers of MobileNetV2-1.0 at 224 px, batch 8, tinymbv2's int8
kernel against its float32 conv + BatchNorm + ReLU6 kernel, one thread, medians of 15,
2026-12-07, commit `ac714b1`; see that page for the conditions):

| layer | float32 | int8 | int8 / float32 |
|---|---|---|---|
| stem 3x3 s2, 3 -> 32 | 3.52 ms | 1.89 ms | 0.53 |
| expansion 1x1, 24 -> 144 (56 px) | 3.52 ms | 0.96 ms | 0.27 |
| depthwise 3x3 s1, 144 (56 px) | 3.19 ms | 1.59 ms | 0.50 |
| depthwise 3x3 s2, 144 (56 -> 28 px) | 2.62 ms | 0.71 ms | 0.27 |
| projection 1x1, 144 -> 24 (56 px) | 1.91 ms | 1.01 ms | 0.53 |
| classifier 1280 -> 1000 | 0.44 ms | 0.42 ms | 0.96 |
| the six | 15.2 ms | 6.58 ms | 0.43 |

The 1x1 convolutions gain the most: AVX-512 VNNI's instruction adds four int8 products
into each 32-bit lane. The depthwise filter has few products per value loaded; it gains
by reading a quarter of the bytes, widened in the registers. The Linear on a batch of
eight is too little work to gain.

**The whole network in int8** (docs/benchmarks.md, "Deployment: int8 inference against
float32", `python -m benchmarks.int8_inference`: MobileNetV2-1.0 at 224 px, per-channel
int8, two threads each, medians of 11, AMD EPYC host, 2026-12-07, commit `2a98be0`, one of
its two runs; tinymbv2's `Int8Net` runs each inverted residual block as one kernel, its
expanded tensor kept in the cache; the float32 contestant is the frozen model):

| batch | tinymbv2 float32 (frozen) | tinymbv2 Int8Net | onnxruntime int8 |
|---|---|---|---|
| 1 | 4.56 ms | 2.98 ms (0.65x) | 4.45 ms (0.97x) |
| 8 | 28.18 ms | 15.42 ms (0.55x) | 18.01 ms (0.64x) |

In brackets, the ratio to tinymbv2's float32 time in the same run. Int8 takes a little
over half the frozen float time at batch 8 and two thirds at batch 1, and at this size
tinymbv2's int8 kernels run ahead of onnxruntime's. Four times smaller files are certain;
faster inference depends on the kernels and the machine, as the 8x8 race above shows.

## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see: it
prints `correct` or `not yet:` with a hint naming the case that fails.

### Exercise 18.1

Write `qparams(min_val, max_val, dtype, symmetric)`: the scale and zero point that store the
float range $[\text{min\_val}, \text{max\_val}]$ (18.4's formulas): widen the range to hold 0;
int8 is $[-128, 127]$, uint8 $[0, 255]$; symmetric: $z = 0$ for int8 (128 for uint8) and
$s = \max(-a, b) / ((q_\max - q_\min)/2)$; affine: $s = (b - a)/(q_\max - q_\min)$ and
$z = q_\min - \mathrm{round}(a / s)$, clamped to the range. Numbers in, numbers out.
"""

# %%
from tinymbv2.exercises import check_qparams

def qparams(min_val, max_val, dtype, symmetric):
    """-> (scale, zero_point) for the float range [min_val, max_val]; dtype "int8" or "uint8"."""
    raise NotImplementedError("your code here")

check_qparams(qparams)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def qparams(min_val, max_val, dtype, symmetric):
    qmin, qmax = (-128, 127) if dtype == "int8" else (0, 255)
    a, b = min(min_val, 0.0), max(max_val, 0.0)             # 0 must be exact
    if symmetric:
        scale = max(-a, b) / ((qmax - qmin) / 2)
        zero = 0 if dtype == "int8" else 128
    else:
        scale = (b - a) / (qmax - qmin)
        zero = int(np.clip(qmin - np.rint(a / scale), qmin, qmax))
    return scale, zero
```

Without the widening, a range such as $[0.5, 2]$ would store no integer for 0, and the zero
padding of a convolution would become a non-zero value.

</details>

### Exercise 18.2

Write `fake_quant(x, scale, zero_point, qmin, qmax)`: 18.4's $\hat x$ for a NumPy array
(per tensor: one scale, one zero point), rounding half to even as `np.rint` does.
"""

# %%
from tinymbv2.exercises import check_fake_quant

def fake_quant(x, scale, zero_point, qmin, qmax):
    """x (any shape) -> the dequantized values (q - z) s, same shape."""
    raise NotImplementedError("your code here")

check_fake_quant(fake_quant)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def fake_quant(x, scale, zero_point, qmin, qmax):
    q = np.clip(np.rint(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale
```

The clamp comes after the zero point is added: the integer range is the stored one.

</details>

### Exercise 18.3

Write `ste_grad(x, grad, scale, zero_point, qmin, qmax)`: the straight-through estimator's
gradient of 18.7 with respect to `x`, given the upstream gradient `grad` of $\hat x$.
"""

# %%
from tinymbv2.exercises import check_ste_grad

def ste_grad(x, grad, scale, zero_point, qmin, qmax):
    """x, grad (same shape) -> dL/dx under the straight-through estimator."""
    raise NotImplementedError("your code here")

check_ste_grad(ste_grad)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def ste_grad(x, grad, scale, zero_point, qmin, qmax):
    q = np.rint(x / scale) + zero_point                  # before the clamp
    return grad * ((q >= qmin) & (q <= qmax))
```

The test is on the integer before clamping: a value clipped to $q_\max$ gets no gradient,
one that rounds to $q_\max$ from inside the range does.

</details>
"""
