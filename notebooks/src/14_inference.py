# %% [markdown]
r"""
# 14. Inference and deployment

Once trained, a network only ever runs forward, in eval mode. Two tricks make that cheaper.

## BatchNorm folding

In eval mode BatchNorm is a fixed per-channel affine map, and the convolution before it is
linear, so the two collapse into one convolution with a bias. For output channel $o$, with
$s_o = \gamma_o / \sqrt{\sigma^2_o + \epsilon}$ (running variance $\sigma^2_o$, running mean $\mu_o$):

$$
\mathrm{BN}(W * x + b)_o = s_o \big( (W * x)_o + b_o - \mu_o \big) + \beta_o
= \big( \underbrace{s_o W_o}_{W'_o} * x \big) + \underbrace{s_o (b_o - \mu_o) + \beta_o}_{b'_o}.
$$

The folded network computes the same function with 52 fewer layers: no separate BatchNorm
pass over every activation, which on a phone is a real saving (and in 8-bit deployment the
folded weights are what gets quantised).

## Memory-efficient inference (paper section 5.1)

A bottleneck block is $F(x) = B(N(A(x)))$: $A$ the expansion ($1\times1$ conv, BN, ReLU6), $N$ the
per-channel part (depthwise conv, BN, ReLU6), $B$ the linear projection. $A$ and $N$ treat each
hidden channel separately and $B$ is linear, so splitting the $tk$ hidden channels into $m$ groups,

$$
F(x) = \sum_{i=1}^{m} B_i\big(N(A_i(x))\big) \qquad (\text{the projection's BN applied once, after the sum}),
$$

gives the same result while only one group of the wide hidden tensor is alive at a time.
The multiply-adds are unchanged; the peak memory shrinks.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import copy
import time
import tracemalloc
import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import Tensor, nn
from tinymbv2.models import memory_efficient_inference, mobilenet_v2, summary, to_torch_state_dict

rng = np.random.default_rng(0)
res = 112 if TINYMBV2_FAST else 224

# a "trained-looking" model: non-trivial BatchNorm parameters and running statistics
model = mobilenet_v2(seed=0)
for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
        c = m.num_features
        m.weight.data[...] = 1 + 0.2 * rng.standard_normal(c)
        m.bias.data[...] = 0.1 * rng.standard_normal(c)
        m.running_mean.data[...] = 0.1 * rng.standard_normal(c)
        m.running_var.data[...] = 0.5 + rng.random(c)
model.eval()
x = Tensor(rng.standard_normal((1, 3, res, res)).astype(np.float32))

# %% [markdown]
r"""
## 14.1 Folding, written out

Every `Sequential` in the model that holds a `Conv2d` directly followed by a `BatchNorm2d`
(the stem, the head, the expansion and depthwise layers, and each block's projection) gets
the pair replaced by one `Conv2d` with a bias and an `Identity`.
"""

# %%
def fold_batchnorm(model):
    """An eval-mode copy of ``model`` with every Conv2d -> BatchNorm2d pair fused."""
    folded = copy.deepcopy(model).eval()
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            scale = bn.weight.data / np.sqrt(bn.running_var.data + bn.eps)        # s_o
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              conv.padding, conv.dilation, conv.groups, bias=True)
            fused.weight.data[...] = conv.weight.data * scale.reshape(-1, 1, 1, 1)  # W' = s W
            b = conv.bias.data if conv.bias is not None else 0.0
            fused.bias.data[...] = scale * (b - bn.running_mean.data) + bn.bias.data  # b' = s (b - mu) + beta
            seq[i], seq[i + 1] = fused, nn.Identity()
    return folded

folded = fold_batchnorm(model)
count = lambda m, kind: sum(isinstance(k, kind) for k in m.modules())
print("BatchNorms:", count(model, nn.BatchNorm2d), "->", count(folded, nn.BatchNorm2d),
      "| convolutions with a bias:", sum(isinstance(k, nn.Conv2d) and k.bias is not None for k in folded.modules()))
with tinymbv2.no_grad():
    y, y_folded = model(x).data, folded(x).data
print(f"max |logits - folded logits| = {np.abs(y - y_folded).max():.2e}  (logits up to {np.abs(y).max():.2f}, float32)")
assert count(folded, nn.BatchNorm2d) == 0 and np.abs(y - y_folded).max() < 1e-4 * max(1.0, np.abs(y).max())

import torch, torchvision    # only from here on: the comparisons with PyTorch (after tinymbv2)

tv = torchvision.models.mobilenet_v2().eval()
tv.load_state_dict(to_torch_state_dict(model))
with torch.no_grad():
    y_tv = tv(torch.from_numpy(x.data)).numpy()
print(f"max |folded logits - torchvision (unfolded) logits| = {np.abs(y_folded - y_tv).max():.2e}")
assert np.abs(y_folded - y_tv).max() < 1e-4 * max(1.0, np.abs(y_tv).max())

# %% [markdown]
r"""
## 14.2 Measured speed

Forward time for one image (the median of five calls, after one untimed call that compiles
the kernels), with the Numba and the reference kernels, next to
PyTorch on the same CPU (same weights, eval mode, `no_grad`): the model as written, layer by
layer; its fused view `tinymbv2.fuse(model)`, which runs each block as one op (section 14.4
explains it); and the folded model of 14.1. Ratios
are against PyTorch measured in the same run, on whatever machine executed this page: on a
machine busy with other work the parallel Numba kernels suffer most (their threads wait for
free cores), so read the ratios with that in mind; the Benchmarks page of the documentation
holds controlled measurements.
"""

# %%
def median_of(fn, repeat=5):
    """Seconds per call of fn(): the median of `repeat` timed calls after an untimed one."""
    fn()                                  # warm-up: Numba compiles on the first call
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return float(np.median(times))        # one slow run (a busy machine) does not move it

timings = {}
with torch.no_grad():
    timings["torch (unfolded)"] = median_of(lambda: tv(torch.from_numpy(x.data)))
fused = tinymbv2.fuse(model)    # the same parameters; recognised layer patterns fused (14.4)
for kernels in ("numba", "reference"):
    with tinymbv2.use_kernels(kernels), tinymbv2.no_grad():
        timings[f"tinymbv2 {kernels}"] = median_of(lambda: model(x))
        timings[f"tinymbv2 {kernels}, fused"] = median_of(lambda: fused(x))
        timings[f"tinymbv2 {kernels}, folded"] = median_of(lambda: folded(x))
for name, t in timings.items():
    print(f"{name:30s} {t * 1e3:8.1f} ms   {t / timings['torch (unfolded)']:5.1f} x torch")

fig, ax = plt.subplots(figsize=(7, 2.8))
ax.barh(list(timings), [t * 1e3 for t in timings.values()], color="#48c"); ax.invert_yaxis()
ax.set_xlabel(f"ms per {res}x{res} image"); plt.tight_layout(); plt.show()
with tinymbv2.no_grad():
    print(f"max |fused logits - model logits| = {np.abs(fused(x).data - model(x).data).max():.1e}")

# %% [markdown]
r"""
## 14.3 Memory-efficient inference, measured

`memory_efficient_inference(model, x, chunks=m)` runs every block in $m$ slices of its
hidden channels. Python's `tracemalloc` sees every NumPy allocation, so we can measure the
peak of live array memory during the forward pass (above what was alive before: the
weights and the input). One slice is the plain layer-by-layer forward: each block's
expanded tensor is alive whole. We also measure the model as written, layer by layer, and
its fused view, which with the numba kernels computes each block band by band (section 14.5
below), so it never holds a whole expanded tensor either.
"""

# %%
def peak(fn):
    fn()                                                         # warm-up outside the measurement
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory(); tracemalloc.reset_peak()
        out = fn()
        _, top = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, top - start

with tinymbv2.no_grad():
    ref_out, ref_peak = peak(lambda: model(x).data)
    fused_out, fused_peak = peak(lambda: fused(x).data)
rows = [("model(x): layers", ref_peak, 0.0),
        ("fused(x): bands", fused_peak, float(np.abs(fused_out - ref_out).max()))]
for m in (1, 2, 4, 8):
    out, p = peak(lambda: memory_efficient_inference(model, x, chunks=m).data)
    name = f"{m} slices" if m > 1 else "1 slice: layers"
    rows.append((name, p, float(np.abs(out - ref_out).max())))
s = summary(model, input_size=(3, res, res))
print(f"largest single activation tensor (summary): {s.max_activation_bytes / 2**20:.2f} MiB")
for name, p, err in rows:
    print(f"{name:16s} peak {p / 2**20:7.2f} MiB   max |logits - model(x)| = {err:.1e}")
peaks = {name: p for name, p, _ in rows}
assert peaks["2 slices"] < peaks["1 slice: layers"] and peaks["4 slices"] < peaks["2 slices"]
assert peaks["fused(x): bands"] < peaks["model(x): layers"] and max(r[2] for r in rows) < 1e-5
print("checked: the peak falls from 1 to 2 to 4 slices, the fused view's peak is below the "
      "layer-by-layer one, and every variant gives the model's logits")

fig, ax = plt.subplots(figsize=(7, 3))
ax.bar([r[0] for r in rows], [r[1] / 2**20 for r in rows], color=["#888", "#48c", "#888"] + ["#4a4"] * 3)
ax.set_ylabel("peak live arrays (MiB)"); ax.set_title(f"forward at {res}x{res}, batch 1, float32")
ax.tick_params(axis="x", labelrotation=20)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
The peak falls with the number of slices until it is set by tensors that are not sliced (a
block's input and output, and the temporaries of the widest slice), as the paper predicts.
Cutting the block into bands of rows instead of slices of channels gets the same kind of
saving: the fused numba forward holds at most a band's worth of the expanded tensor per
thread.
The logits are the same up to float32 rounding, because only the order of the additions in
the projection changed. The price is more, smaller kernel calls, which on a CPU in Python
costs time; the paper's point is for memory-bound mobile inference engines.

## 14.4 Fusion: what a compiler does, done by hand

The model of chapter 5 is written layer by layer, as the paper and torchvision write it, and
run that way every layer reads its input from memory and writes its output back: a
convolution, then a BatchNorm over its output, then a ReLU6 over that. On a CPU much of
MobileNetV2's time goes to that traffic rather than to the multiply-adds. A framework's compiler
(`torch.compile`, XLA, TensorRT) looks at the network as a graph and *fuses* runs of layers
into single kernels. `tinymbv2.fuse(model)` does the same, in the open: it returns a **fused
view** of the model, a new tree of containers over the very same layers (the same
`Parameter` and buffer objects, so the same `state_dict`, and training one trains the other),
whose containers run the patterns they recognise as one op each:

| pattern | when | runs as |
|---|---|---|
| conv, BatchNorm (, ReLU6) | inference | `F.conv2d_batch_norm_eval` |
| conv, BatchNorm, ReLU6 | training | the conv, then `F.batch_norm_relu6` (chapter 4) |
| BN + ReLU6, depthwise 3x3, BN + ReLU6 | training | the conv before it, then `F.depthwise_stage_train` (14.6) |
| a whole inverted residual block | inference | `F.inverted_residual_eval` (14.5) |

Layers a user swapped in (another activation, a subclass of `Conv2d`) do not match and run as
they are. The trainer, evaluation, prediction and the `tinymbv2` command fuse by default
(`--no-fuse` runs the plain model, to step through it). The profiler shows what runs:
"""

# %%
from tinymbv2 import functional as F, profiler

print(type(fused.features[2]).__name__, "holds the model's own layers:",
      fused.features[2].conv[0][0] is model.features[2].conv[0][0])
print("the same state_dict keys:", list(fused.state_dict()) == list(model.state_dict()))

def ops_run(net, train):
    """{Function name: calls} of one forward (and backward, in training) of ``net``."""
    net.train(train)
    xs = Tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    with profiler.profile() as prof:
        if train:
            F.cross_entropy(net(xs), np.array([1, 2])).backward()
        else:
            with tinymbv2.no_grad():
                net(xs)
    return {name: n for (name, phase), n in sorted(prof.calls.items()) if phase == "forward"}

for train in (False, True):
    plain, fast = ops_run(model, train), ops_run(fused, train)
    print(f"\n{'training' if train else 'inference':<22}{'model':>7}{'fused':>7}")
    for name in sorted(set(plain) | set(fast)):
        print(f"{name:<22}{plain.get(name, 0):>7}{fast.get(name, 0):>7}")
    print(f"{'ops in all':<22}{sum(plain.values()):>7}{sum(fast.values()):>7}")
    if not train:
        assert fast["InvertedResidualEval"] == 17 and fast["ConvBatchNormEval"] == 2
    else:
        assert fast["DepthwiseStageTrain"] == 17 and "ReLU6" not in fast
_ = model.eval()   # back to inference for the rest of the chapter (the view shares the layers)

# %% [markdown]
r"""
In inference the fused view runs each of the 17 blocks as one op and the stem and the head
as one convolution-with-BatchNorm op each; in training each block's middle (and, for block 1,
the stem's BatchNorm with block 1's depthwise layer) is one op. The numbers stay those of the
plain model up to float rounding: the test suite compares the two in float64 (logits, every
gradient, the running statistics, in both modes) and with the reference kernels finds the
same bits. The next two sections look inside the two biggest fusions.

## 14.5 A whole block in one pass

The observation behind memory-efficient inference, that $A$ and $N$ work channel by channel
and row by row, also saves *time* on a CPU. Run layer by layer, block 2 at 224 px writes its
expanded tensor (96 channels of 112x112: 4.6 MiB per image in float32, 36.8 MiB for a batch of
8, more than a CPU's last-level cache) to memory, and then reads it back for BatchNorm, for
ReLU6, for the depthwise filter, and again for the projection. The fused view instead runs
each block with `F.inverted_residual_eval`, and the numba kernel computes it for one band of
output rows of one image at a time: expansion, BatchNorm + ReLU6, depthwise filter and
projection run back to back while the band is in cache. Only the block's input and output
touch memory. The depthwise filter needs one input row above and below its band, so those
rows are expanded twice.

The result is the layer-by-layer one up to float rounding, since only the GEMMs' columns are
grouped differently. Below, block 2 and block 12 (96 channels of 14x14 at 224 px, expanded
to 576) run both ways on a batch of 8, after
`tinymbv2.backend.keep_freed_memory()`, as the benchmarks do: without it, glibc gives every
array above 32 MiB fresh pages from the system on each call, which the layer-by-layer block
pays for and the fused one, which never allocates the big tensor, does not.
"""

# %%
tinymbv2.backend.keep_freed_memory()       # reuse freed memory (see the text above)
late = 12                                  # 14x14 planes at 224 px (7x7 at 112), 96 channels, stride 1
with tinymbv2.no_grad():
    h = Tensor(rng.standard_normal((8, 3, res, res)).astype(np.float32))
    block_inputs = {}
    for i in range(late + 1):              # the blocks' inputs, layer by layer
        block_inputs[i] = h
        h = model.features[i](h)
    block_times = {}
    for i in (2, late):
        block, fused_block, h = model.features[i], fused.features[i], block_inputs[i]
        by_layer, one_pass = (lambda: block(h).data), (lambda: fused_block(h).data)
        difference = np.abs(one_pass() - by_layer()).max()
        block_times[i] = median_of(by_layer), median_of(one_pass)
        print(f"block {i:2d}: input {tuple(h.shape)}, expanded to {block.hidden_dim} channels "
              f"({h.shape[0] * block.hidden_dim * h.shape[2] * h.shape[3] * 4 / 2**20:.1f} MiB in float32); "
              f"max |difference| {difference:.1e}")
        print(f"          layer by layer {block_times[i][0] * 1e3:6.2f} ms | fused {block_times[i][1] * 1e3:6.2f} ms "
              f"| ratio {block_times[i][0] / block_times[i][1]:.2f}")
if not TINYMBV2_FAST:
    assert block_times[2][1] < block_times[2][0], block_times[2]
    print("checked: block 2 runs faster in one pass than layer by layer (medians of 5)")

# %% [markdown]
r"""
The two blocks gain for different reasons. Block 2's expanded tensor is larger than the
cache, and band by band it never goes to memory at all. Block 12's 14x14 planes fit in the
cache anyway; there the numba kernels run the block's layers one after the other (kept
channels-last, with each convolution's BatchNorm and ReLU6 applied while its output is in
cache), and what the fused block saves is the separate BatchNorm and ReLU6 passes and the
Python calls between layers. How large each ratio is depends on the machine (its cache, its
memory bandwidth, its cores, how busy it is): the cell above prints this run's. At full size it
checks the claim this section makes, that block 2 is faster in one pass than layer by layer.

## 14.6 The block's middle as one op, in training

Training cannot cut a block into bands of rows: its BatchNorms need the statistics of the
whole batch before they can normalise anything. But it can cut by channel. Between its two
$1\times1$ convolutions a block runs three per-channel steps on the expanded tensor $e$:
$a = \mathrm{ReLU6}(\mathrm{BN}_1(e))$, the depthwise filter $d = N(a)$, and
$h = \mathrm{ReLU6}(\mathrm{BN}_2(d))$. Layer by layer, block 2 at 224 px, batch 8 reads or
writes its 36.8 MiB expanded tensor about sixteen times in one training step: BatchNorm reads
$e$ twice (statistics, then $a$), the filter reads $a$, and so on, and the backward pass does
as much again. One channel's eight planes are a few hundred KB, which stay in the CPU's cache
through all three steps.

`F.depthwise_stage_train` is that op, and the fused view runs every block's middle through it
in training (for block 1, which has no expansion, from the stem's BatchNorm on). The numba
kernel reads $e$ once and writes $d$ and $h$; it never stores $a$ at all, because the backward
pass recomputes it from $e$, which it has to read anyway. Every step is the separate ops' own
loop, on the same numbers in the same order, so the results are not just close: they are the
same bits. Below, the three ops and the one op on block 2's expanded tensor.
"""

# %%
side = 56 if TINYMBV2_FAST else 112       # block 2's expanded planes at 224 px: 112x112
g = np.random.default_rng(5)
e_np = (g.standard_normal((8, 96, side, side)) + 0.5).astype(np.float32)
params = [g.uniform(0.5, 2, 96), g.standard_normal(96), g.standard_normal((96, 1, 3, 3)) / 3,
          g.uniform(0.5, 2, 96), g.uniform(0, 2, 96)]
grad_h = g.standard_normal((8, 96, side // 2, side // 2)).astype(np.float32)

def step(one_op):
    """Forward and backward of the block's middle at stride 2; -> (h, gradients, seconds)."""
    e = Tensor(e_np, requires_grad=True)
    w1, b1, wd, w2, b2 = (Tensor(p.astype(np.float32), requires_grad=True) for p in params)
    start = time.perf_counter()
    if one_op:
        h = F.depthwise_stage_train(e, (None, None, w1, b1, 0.1, 1e-5), wd, 2,
                                    (None, None, w2, b2, 0.1, 1e-5))
    else:
        a = F.batch_norm_relu6(e, None, None, w1, b1, training=True)
        d = F.conv2d(a, wd, None, stride=2, padding=1, groups=96)
        h = F.batch_norm_relu6(d, None, None, w2, b2, training=True)
    h.backward(Tensor(grad_h))
    seconds = time.perf_counter() - start
    return h.data, [t.grad for t in (e, w1, b1, wd, w2, b2)], seconds

(h3, g3, _), (h1, g1, _) = step(False), step(True)   # (the first calls also compile)
print("same bits:", np.array_equal(h3, h1) and all(np.array_equal(p, q) for p, q in zip(g3, g1)))
seconds = {False: [], True: []}
for _ in range(5):                         # alternating, each run's arrays let go at once
    for one_op in (False, True):
        seconds[one_op].append(step(one_op)[2])
stage_ms = {one_op: float(np.median(seconds[one_op])) * 1e3 for one_op in seconds}
for one_op, name in ((False, "three ops"), (True, "one op   ")):
    print(f"{name} forward + backward: {stage_ms[one_op]:6.2f} ms (median of 5)")
print(f"ratio three ops / one op: {stage_ms[False] / stage_ms[True]:.2f}")
if not TINYMBV2_FAST:
    assert stage_ms[True] < stage_ms[False], stage_ms
    print("checked: the one op is faster than the three (medians of 5)")
print(f"a = ReLU6(BN1(e)) not kept for the backward: {e_np.nbytes / 2**20:.1f} MiB")

# %% [markdown]
r"""
Where the one op is faster (the cell prints the ratio this run measured, and at full size
checks that it is above 1), it is because it moves fewer bytes, not because it computes less:
it even computes $a$ twice. On the 16x16 and smaller planes, which the numba kernels keep
channels-last, the numba set runs the three ops: `depthwise_stage_train` is then their
composition, as the reference kernels define it (the Benchmarks page of the documentation
measures whole training steps). A deep-learning compiler finds fusions like this one by itself; here they
are written by hand, and the test suite checks them against the separate ops and against
PyTorch.

## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see: it
prints `correct` or `not yet:` with a hint naming the case that fails.

### Exercise 14.1

Fold an eval-mode BatchNorm into the convolution before it, on plain arrays: given the conv's
`weight` $(C_o, C_i/g, k_h, k_w)$ and `bias` ($(C_o,)$, or None for a conv without one) and the
BatchNorm's `gamma`, `beta`, running `mean` and `var` and `eps`, return the folded weight and
bias of section 14.1's formula. Leave the inputs as they are (they are the model's own arrays).
"""

# %%
from tinymbv2.exercises import check_fold_batchnorm

def fold_batchnorm_arrays(weight, bias, gamma, beta, mean, var, eps):
    """-> (folded weight, same shape as weight; folded bias, shape (C_o,)), NumPy arrays."""
    raise NotImplementedError("your code here")

check_fold_batchnorm(fold_batchnorm_arrays)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def fold_batchnorm_arrays(weight, bias, gamma, beta, mean, var, eps):
    s = gamma / np.sqrt(var + eps)                      # one scale per output channel
    b = 0.0 if bias is None else bias
    return weight * s.reshape(-1, 1, 1, 1), s * (b - mean) + beta
```

The scale multiplies output channel $o$'s whole filter, `weight[o]`, whatever the groups (a
depthwise conv has one input channel per filter, so axis 1 has size 1 there). `weight *= ...`
would change the model's weights in place: the plain model would then apply the scale twice.
A BatchNorm *before* a conv could be folded into that conv too (scale its input channels,
axis 1), but not across a ReLU6, and with zero padding the borders would come out wrong.

</details>

### Exercise 14.2

Section 5.1 of the paper, by hand: write `sliced_block`, the block below (expansion, ReLU6,
depthwise $3\times3$, ReLU6, projection; BatchNorm left out) computed in `m` slices of its hidden
channels, $F(x) = \sum_i B_i(N(A_i(x)))$, so that only one slice of the wide tensor is alive at a
time. The check compares the result with `block` for several `m` (not all dividing the hidden
width) and measures the peak memory with `tracemalloc`, as section 14.3 does: with 8 slices it
must stay well below what the whole hidden tensor would need.
"""

# %%
from tinymbv2.exercises import check_sliced_block

def relu6(a):
    return np.clip(a, 0.0, 6.0)

def pointwise(a, w):
    """1x1 conv: (N, C_in, H, W), w (C_out, C_in) -> (N, C_out, H, W)."""
    return np.einsum("oc,nchw->nohw", w, a)

def depthwise3x3(a, w):
    """Depthwise 3x3 conv, stride 1, padding 1: (N, C, H, W), w (C, 3, 3) -> (N, C, H, W)."""
    h, wd = a.shape[2:]
    p = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return sum(w[None, :, i, j, None, None] * p[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(3))

def block(x, w_expand, w_dw, w_project):
    """The whole block at once: w_expand (hidden, C_in), w_dw (hidden, 3, 3), w_project (C_out, hidden)."""
    return pointwise(relu6(depthwise3x3(relu6(pointwise(x, w_expand)), w_dw)), w_project)

def sliced_block(x, w_expand, w_dw, w_project, m):
    """block(x, ...) computed over m slices of the hidden channels; same result."""
    raise NotImplementedError("your code here")

check_sliced_block(sliced_block)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def sliced_block(x, w_expand, w_dw, w_project, m):
    out = 0.0
    for sl in np.array_split(np.arange(w_expand.shape[0]), m):    # covers every channel
        hidden = relu6(depthwise3x3(relu6(pointwise(x, w_expand[sl])), w_dw[sl]))
        out = out + pointwise(hidden, w_project[:, sl])          # B_i: the projection's columns
    return out
```

Expansion and depthwise filter treat each hidden channel on its own, and the projection is
linear, so its sum over all hidden channels splits into sums over the slices. Computing every
slice first and concatenating them would give the same numbers and save nothing.

</details>

### Exercise 14.3

Timing done right, as this chapter's cells do it: call `fn` once untimed (the first call
compiles Numba's kernels), then time `repeat` calls one by one and return the **median**, which
one slow run (the machine busy with something else) does not move. Read the time from
`clock` (it is `time.perf_counter` in real use; the check gives a fake one).
"""

# %%
from tinymbv2.exercises import check_median_time

def median_time(fn, repeat, clock=time.perf_counter):
    """Seconds per call of fn(): the median of `repeat` timed calls after one warm-up call."""
    raise NotImplementedError("your code here")

check_median_time(median_time)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def median_time(fn, repeat, clock=time.perf_counter):
    fn()                                    # warm-up: compiles, fills caches
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        times.append(clock() - start)
    return float(np.median(times))
```

The minimum is the other common choice (the run least disturbed); the mean is the one to
avoid, since a single interrupted run drags it up. Either way, compare two programs only from
timings taken on the same machine in the same state, one after the other or interleaved.

</details>
"""
