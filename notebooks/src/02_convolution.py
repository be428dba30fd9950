# %% [markdown]
r"""
# 2. Convolution: dense, depthwise, pointwise

MobileNetV2 is built from three kinds of convolution. This chapter writes each one as
plain loops, derives its two backward passes, then looks at how the library's readable
kernels (`tinymbv2.kernels.reference`) vectorise them, how fast the Numba kernels are, and
why the order of an array's bytes (its memory layout) matters as much as the arithmetic.

**The forward pass.** For an input $x$ of shape $(N, C_i, H, W)$, a weight $w$ of shape
$(C_o, C_i, k, k)$, stride $s$ and zero padding $p$ (giving the padded input $\tilde x$),

$$
y[n, o, i, j] = \sum_{c=0}^{C_i-1} \sum_{a=0}^{k-1} \sum_{b=0}^{k-1} w[o, c, a, b]\;\tilde x[n, c, i s + a, j s + b],
\qquad H_o = \left\lfloor \frac{H + 2p - k}{s} \right\rfloor + 1 .
$$

(Strictly a cross-correlation; every deep-learning library calls it convolution.)

* **Dense** (MobileNetV2's 3x3 stem): every output channel sums over every input channel.
* **Depthwise** (`groups = C`): channel $c$ has its own $k\times k$ filter and sees only channel $c$:
  $y[n,c,i,j] = \sum_{a,b} w[c,0,a,b]\,\tilde x[n,c,is+a,js+b]$.
* **Pointwise** ($1\times 1$): no spatial extent, only a mix of channels: for every pixel,
  $y = W x$ with $W \in \mathbb{R}^{C_o\times C_i}$. A matrix product.

**Cost in multiply-adds** (paper section 3.1), for an output of $H_o \times W_o$ pixels:

| layer | multiply-adds |
|---|---|
| dense $k\times k$ | $H_o W_o \, C_i C_o \, k^2$ |
| depthwise $k \times k$ | $H_o W_o \, C_i \, k^2$ |
| pointwise | $H_o W_o \, C_i C_o$ |

A depthwise followed by a pointwise ("depthwise separable") costs
$H_o W_o C_i (k^2 + C_o)$ instead of $H_o W_o C_i C_o k^2$: a fraction
$\frac{1}{C_o} + \frac{1}{k^2}$, about $8$ to $9$ times fewer for $k = 3$.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import inspect
import re
import time
import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import Tensor, functional as F
from tinymbv2.kernels import kernel_set
from tinymbv2.kernels import taps  # the tap window the reference kernels slice with

reference, numba_set = kernel_set("reference"), kernel_set("numba")  # readable, fast

rng = np.random.default_rng(0)

# %%
def macs_dense(h, w, ci, co, k):     return h * w * ci * co * k * k
def macs_separable(h, w, ci, co, k): return h * w * ci * (k * k + co)

print(f"{'layer (output HxW, Ci -> Co)':32s} {'dense 3x3':>14s} {'dw + pw':>12s} {'ratio':>6s}")
layers = [(112, 112, 32, 64), (56, 56, 144, 144), (28, 28, 192, 192), (14, 14, 384, 384), (7, 7, 960, 960)]
for h, w, ci, co in layers:
    d, s = macs_dense(h, w, ci, co, 3), macs_separable(h, w, ci, co, 3)
    print(f"{h}x{w}, {ci:4d} -> {co:4d}{'':12s} {d:14,d} {s:12,d} {d / s:6.2f}")
    assert 7.5 < d / s < 9, "a depthwise separable 3x3 layer saves about 8 to 9 times"
print("predicted ratio for Co=384: 1 / (1/384 + 1/9) =", round(1 / (1 / 384 + 1 / 9), 2))

# %% [markdown]
r"""
## 2.1 Naive loops, the definition written out

Seven nested loops for the dense convolution. Slow, but obviously right: we compare it with
PyTorch's `conv2d` (imported here, where the comparisons start) and print the largest
difference.
"""

# %%
import torch


def conv2d_naive(x, w, stride=1, padding=0):
    n, ci, h, wd = x.shape
    co, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    y = np.zeros((n, co, ho, wo), x.dtype)
    for b in range(n):
        for o in range(co):
            for i in range(ho):
                for j in range(wo):
                    for c in range(ci):
                        for p in range(k):
                            for q in range(k):
                                y[b, o, i, j] += w[o, c, p, q] * xp[b, c, i * stride + p, j * stride + q]
    return y

x = rng.standard_normal((2, 3, 9, 9))
w = rng.standard_normal((4, 3, 3, 3))
for stride, padding in ((1, 0), (1, 1), (2, 1)):
    y_naive = conv2d_naive(x, w, stride, padding)
    y_torch = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), stride=stride, padding=padding).numpy()
    y_ref = reference.conv2d_forward(x, w, (stride, stride), (padding, padding))
    print(f"stride {stride} padding {padding}: output {y_naive.shape}, "
          f"max |naive - torch| = {np.abs(y_naive - y_torch).max():.1e}, "
          f"max |reference - torch| = {np.abs(y_ref - y_torch).max():.1e}")
    assert max(np.abs(y_naive - y_torch).max(), np.abs(y_ref - y_torch).max()) < 1e-10

# %% [markdown]
r"""
## 2.2 The backward passes, derived

Take the depthwise case (one channel, drop $n$ and $c$), stride $s$. Each weight tap $w[a,b]$
multiplied, for every output pixel $(i,j)$, the input pixel $\tilde x[is+a, js+b]$. So

$$
\frac{\partial L}{\partial w[a,b]} = \sum_{n,i,j} \frac{\partial L}{\partial y[i,j]}\;\tilde x[is+a,\,js+b],
$$

the input *correlated with the output gradient*. And each input pixel fed every output whose
window covered it:

$$
\frac{\partial L}{\partial \tilde x[u,v]} = \sum_{a,b} \frac{\partial L}{\partial y\!\left[\frac{u-a}{s}, \frac{v-b}{s}\right]}\; w[a,b]
\quad\text{(terms with a non-integer index are absent)}.
$$

With $s = 1$ that is the output gradient, zero-padded by $k-1-p$, correlated with the
kernel flipped in both axes: a "full" convolution. With $s=2$ it is the same after inserting
a zero between the output-gradient pixels (the *transposed convolution*). Then we crop the
padding: its gradient belongs to no input.

The easiest way to implement it without index gymnastics is to *scatter*: run the forward
loops again and send each output's gradient back along the wire it was read through.
"""

# %%
def depthwise_naive(x, w, s, p):
    n, c, h, wd = x.shape
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
    y = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            for a in range(k):
                for b in range(k):
                    y[:, :, i, j] += w[:, 0, a, b] * xp[:, :, i * s + a, j * s + b]
    return y

def depthwise_backward_naive(gy, x, w, s, p):
    """Scatter: the same loops as the forward, gradients flowing the other way."""
    n, c, h, wd = x.shape
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(gy.shape[2]):
        for j in range(gy.shape[3]):
            for a in range(k):
                for b in range(k):
                    gxp[:, :, i * s + a, j * s + b] += w[:, 0, a, b] * gy[:, :, i, j]
                    gw[:, 0, a, b] += (gy[:, :, i, j] * xp[:, :, i * s + a, j * s + b]).sum(axis=0)
    return gxp[:, :, p:p + h, p:p + wd], gw

x = rng.standard_normal((2, 5, 8, 8)); w = rng.standard_normal((5, 1, 3, 3))
for s in (1, 2):
    y = depthwise_naive(x, w, s, 1)
    gy = rng.standard_normal(y.shape)              # a random upstream gradient, not ones
    gx, gw = depthwise_backward_naive(gy, x, w, s, 1)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, stride=s, padding=1, groups=5)
    ty.backward(torch.tensor(gy))
    errs = [np.abs(y - ty.detach().numpy()).max(), np.abs(gx - tx.grad.numpy()).max(),
            np.abs(gw - tw.grad.numpy()).max()]
    print(f"stride {s}: forward err {errs[0]:.1e}, dL/dx err {errs[1]:.1e}, dL/dw err {errs[2]:.1e}")
    assert max(errs) < 1e-10, "the scatter backward disagrees with PyTorch"

# %% [markdown]
r"""
## 2.3 The reference kernels: the same loops, vectorised

The loops above iterate over pixels. The reference kernels iterate only over the $k^2$
*taps* of the kernel; for a tap $(a,b)$, the input pixels it touches over all outputs form a
strided slice of the padded input, and one whole-array operation handles them all. Here
are that slice (`tap_window`, in `kernels/taps.py`; the int8 kernels,
`kernels/int8_reference.py`, slice with it too), then the depthwise forward pass and its input
gradient, exactly as in the library (their
`dilation` is 1 in MobileNetV2; an atrous convolution, DeepLab's, spreads the taps $d$
pixels apart, so tap $(a, b)$'s slice starts at $(a d, b d)$ instead of $(a, b)$):
"""

# %%
print(inspect.getsource(taps.tap_window))
print(inspect.getsource(reference.depthwise_conv2d_forward))
print(inspect.getsource(reference.depthwise_conv2d_backward_input))

# %% [markdown]
r"""
The pointwise convolution is a single batched matrix product, and its backward passes are
the two matrix products you know from a linear layer, $G_x = W^\top G_y$ and
$G_W = \sum_n G_y X^\top$:
"""

# %%
print(inspect.getsource(reference.pointwise_conv2d_forward))

# %% [markdown]
r"""
The autograd op `F.conv2d` picks the kernel from the arguments (pointwise, depthwise, dense)
and calls whichever kernel set is active (`tinymbv2.use_kernels("reference" | "numba")`).
Here is the full check against PyTorch, forward and both gradients, for the three kinds
and both kernel sets, with a random upstream gradient:
"""

# %%
cases = {  # name: (input shape, weight shape, stride, padding, groups)
    "dense 3x3 s2": ((2, 3, 17, 17), (8, 3, 3, 3), 2, 1, 1),
    "depthwise 3x3 s1": ((2, 12, 10, 10), (12, 1, 3, 3), 1, 1, 12),
    "depthwise 3x3 s2": ((2, 12, 11, 11), (12, 1, 3, 3), 2, 1, 12),
    "pointwise": ((2, 12, 7, 7), (20, 12, 1, 1), 1, 0, 1),
}
for kernels in ("reference", "numba"):
    with tinymbv2.use_kernels(kernels):
        for name, (xs, ws, s, p, g) in cases.items():
            x, w = rng.standard_normal(xs), rng.standard_normal(ws)
            tx, tw = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
            y = F.conv2d(tx, tw, stride=s, padding=p, groups=g)
            gy = rng.standard_normal(y.shape)
            y.backward(gy)
            px, pw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
            py = torch.nn.functional.conv2d(px, pw, stride=s, padding=p, groups=g)
            py.backward(torch.tensor(gy))
            errs = [np.abs(y.data - py.detach().numpy()).max(), np.abs(tx.grad - px.grad.numpy()).max(),
                    np.abs(tw.grad - pw.grad.numpy()).max()]
            print(f"{kernels:9s} {name:17s} max error  y {errs[0]:.1e}  dx {errs[1]:.1e}  dw {errs[2]:.1e}")
            assert max(errs) < 1e-9, f"{kernels} {name} disagrees with PyTorch"

# %% [markdown]
r"""
## 2.4 How fast? Naive loops vs reference NumPy vs Numba vs PyTorch

A depthwise 3x3 convolution (forward only) on a batch shaped like MobileNetV2's
56x56x144 layer. The naive loops run on a smaller problem and are scaled up by the ratio
of multiply-adds, since the full one would take too long.

Timing a kernel fairly takes three precautions, in `median_time` below: call it once first
and do not count that call (Numba compiles a kernel on its first call, and the first call of
anything touches cold memory); repeat it; and report the median, which one slow run (another
program taking the core for a moment) does not move.
"""

# %%
def median_time(fn, repeat=7):
    """Seconds per call of fn(): the median of `repeat` timed calls, after one untimed call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return float(np.median(times))

n, c, hw = (2, 32, 28) if TINYMBV2_FAST else (8, 144, 56)
x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
small = x[:1, :8, :16, :16]
scale = x.size / small.size
times = {
    "naive loops (scaled)": median_time(lambda: depthwise_naive(small, w[:8], 1, 1), repeat=3) * scale,
    "reference (NumPy)": median_time(lambda: reference.depthwise_conv2d_forward(x, w, (1, 1), (1, 1))),
    "numba": median_time(lambda: numba_set.depthwise_conv2d_forward(x, w, (1, 1), (1, 1))),
}
tx, tw = torch.tensor(x), torch.tensor(w)
with torch.no_grad():
    times["torch"] = median_time(lambda: torch.nn.functional.conv2d(tx, tw, padding=1, groups=c))
err = np.abs(numba_set.depthwise_conv2d_forward(x, w, (1, 1), (1, 1))
             - reference.depthwise_conv2d_forward(x, w, (1, 1), (1, 1))).max()
print(f"input {x.shape}; max |numba - reference| = {err:.1e}")
print(f"{'':22s} {'median ms':>10s}   {'x reference':>11s}")
for k, v in times.items():
    print(f"{k:22s} {v * 1e3:10.3f}   {v / times['reference (NumPy)']:11.3g}")
assert err < 1e-4
loops_vs_numpy = times["naive loops (scaled)"] / times["reference (NumPy)"]
assert loops_vs_numpy > 10, "vectorising over the pixels should pay many times over"
print(f"checked: the vectorised NumPy version is {loops_vs_numpy:.0f} times faster than the loops")

fig, ax = plt.subplots(figsize=(7, 3))
ax.barh(list(times), [v * 1e3 for v in times.values()], color=["#c44", "#48c", "#4a4", "#888"])
ax.set_xscale("log"); ax.set_xlabel("milliseconds, median (log scale)"); ax.invert_yaxis()
ax.set_title(f"depthwise 3x3 forward on {x.shape}")
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
The vectorised NumPy version is many times faster than the loops (the cell checks it),
because the Python loop overhead is paid $k^2 = 9$ times instead of once per pixel. Numba
compiles the loops to machine code and spreads them across the cores; how it and PyTorch
compare with NumPy depends on the CPU, on how many cores are free and on the size of the
problem, so read the table as this run's measurement, not as a ranking. (The benchmarks page
of the documentation has the systematic comparison and tells how to run it on your machine.)

## 2.5 Memory layout: why small planes are stored channels-last

An array of shape (N, C, H, W) says nothing about the order of its bytes. *NCHW* memory
puts each channel's H x W plane in one run; *channels-last* (NHWC) memory puts the C
channels of each pixel in one run. NumPy describes either with the same shape and
different *strides* (bytes to step per index), exactly as PyTorch's
`memory_format=torch.channels_last` does.

Where the planes are large, NCHW suits a depthwise filter: it slides along long runs of
pixels. At the end of MobileNetV2 (and everywhere at 32 px) a plane is 4x4, 2x2 or 1x1: a
loop along four pixels cannot fill a vector instruction (8 float32 with AVX2, 16 with
AVX-512), but a loop along 192 channels can. Channels-last also makes a 1x1 convolution
over the whole batch a single matrix product, `(N*H*W, Ci) @ (Ci, Co)`. So the numba
kernels keep planes of at most 16x16 pixels channels-last (`tinymbv2.kernels.numba.layout`);
the rest of tinymbv2 never notices, because the shape is the same.
"""

# %%
from tinymbv2.kernels.numba import layout as numba_layout

x = rng.standard_normal((16, 192, 4, 4)).astype(np.float32)
x_cl = numba_layout.as_channels_last(x)
print("same shape:", x.shape == x_cl.shape, "| equal values:", np.array_equal(x, x_cl))
print("NCHW strides (bytes):         ", x.strides)
print("channels-last strides (bytes):", x_cl.strides)

w = rng.standard_normal((192, 1, 3, 3)).astype(np.float32)
y_cl = numba_set.depthwise_conv2d_forward(x, w, (1, 1), (1, 1))
print("the numba output of a 4x4 plane is channels-last:", numba_layout.is_channels_last(y_cl))

saved = numba_layout.CHANNELS_LAST_MAX
numba_layout.CHANNELS_LAST_MAX = 0  # the layout off: every plane NCHW
try:
    y_nchw = numba_set.depthwise_conv2d_forward(x, w, (1, 1), (1, 1))
    t_nchw = median_time(lambda: numba_set.depthwise_conv2d_forward(x, w, (1, 1), (1, 1)), repeat=21)
finally:
    numba_layout.CHANNELS_LAST_MAX = saved
t_cl = median_time(lambda: numba_set.depthwise_conv2d_forward(x_cl, w, (1, 1), (1, 1)), repeat=21)
print(f"max difference {np.abs(y_cl - y_nchw).max():.1e}")
print(f"depthwise 3x3 on {x.shape}, median: NCHW {t_nchw * 1e3:.3f} ms, channels-last {t_cl * 1e3:.3f} ms")
assert x_cl.strides[1] == x.itemsize and numba_layout.is_channels_last(y_cl)
assert not numba_layout.is_channels_last(y_nchw) and np.abs(y_cl - y_nchw).max() < 1e-4

# %% [markdown]
r"""
The answer is the same up to float rounding (the sums run in another order); the time is
what changes, by how much depends on the CPU's vector width. The benchmarks page measures
what the layout does for a whole training step at 32 px, where every depthwise, pointwise
and BatchNorm layer works on small planes.

## 2.6 What Numba made of a loop: two traps

Numba compiles a loop to machine code, but only the code it *can* compile well. Two
details kept loops in tinymbv2's own kernels slow until they were found:

* **Numba types `float32 * int` as float64.** NumPy 2 keeps a float32 scalar times a Python
  int in float32; Numba does not. A running sum started as `s = a[0] * 0` therefore runs in
  float64: every float32 term is converted first, and a SIMD register holds half as many
  values. Take the zero from the array's own dtype, `a.dtype.type(0)`.
* **Numba checks every division by zero**, to raise Python's `ZeroDivisionError`. That
  branch in the loop keeps it from being vectorised at all. `error_model="numpy"` divides as
  IEEE floating point and NumPy do (`1/0` is `inf`).

`f.nopython_signatures` shows the types Numba inferred (here the return type of each sum);
`f.inspect_llvm()` shows the code Numba handed to LLVM after LLVM optimised it, where a
division of vectors reads `fdiv <8 x float>` (8 lanes) and a scalar one `fdiv float`. The
cell checks both traps there, which holds on any CPU, then times the four functions.
"""

# %%
from numba import njit

REASSOC = dict(fastmath={"reassoc"})  # let LLVM keep SIMD partial sums


@njit(**REASSOC)
def sum_of_squares_promoted(a):
    s = a[0] * 0  # float32 times an int: float64 in Numba
    for i in range(a.shape[0]):
        s += a[i] * a[i]
    return s


@njit(**REASSOC)
def sum_of_squares(a):
    s = a.dtype.type(0)  # a zero of the array's own dtype
    for i in range(a.shape[0]):
        s += a[i] * a[i]
    return s


@njit
def divide(out, a, b):
    for i in range(a.shape[0]):
        out[i] = a[i] / b[i]


@njit(error_model="numpy")
def divide_ieee(out, a, b):
    for i in range(a.shape[0]):
        out[i] = a[i] / b[i]


def division_widths(f):
    """The operand types of every float32 division in f's optimised LLVM code."""
    code = "".join(f.inspect_llvm().values())
    return sorted(set(re.findall(r"fdiv (?:fast )?(<\d+ x float>|float)", code)))


a = rng.standard_normal(1 << 17).astype(np.float32)  # 512 KiB: stays in cache
b = rng.uniform(1, 2, 1 << 17).astype(np.float32)
out = np.empty_like(a)
for f in (sum_of_squares_promoted, sum_of_squares):
    t = median_time(lambda: f(a), repeat=21)
    kind = f.nopython_signatures[0].return_type
    print(f"{f.__name__:<24} returns {kind}, median {t * 1e6:.0f} us")
division_times = {}
for f in (divide, divide_ieee):
    division_times[f] = t = median_time(lambda: f(out, a, b), repeat=21)
    print(f"{f.__name__:<24} median {t * 1e6:.0f} us, divides {', '.join(division_widths(f))}")
assert str(sum_of_squares_promoted.nopython_signatures[0].return_type) == "float64"
assert str(sum_of_squares.nopython_signatures[0].return_type) == "float32"
assert division_widths(divide) == ["float"], "the checked division stays scalar"
assert any(t.startswith("<") for t in division_widths(divide_ieee)), "the IEEE one is vectorised"
assert division_times[divide_ieee] < division_times[divide], "vectorised division is faster"
print("checked: the promoted sum runs in float64; only the IEEE division is vectorised, and faster")

# %% [markdown]
r"""
The printed times show the price of each trap on the machine that ran this page; its size
depends on the CPU (how wide its vectors are, how fast it divides). In tinymbv2 the first trap had
made every depthwise weight gradient sum in float64, and the second kept RMSprop's update
scalar. `tests/kernels/test_kernel_dtypes.py` now compiles the hot loops afresh and fails
if any of their variables is float64.

## 2.7 Racing BLAS with a plain loop

A 1x1 convolution of one image is one matrix product, $Y = W X$ with $W$ of shape
$(C_o, C_i)$ and $X = x[n]$ viewed as $(C_i, H W)$. NumPy hands `W @ X` to its BLAS, a
library tuned by hand for decades. Can a loop written in Numba keep up? It depends on
what the BLAS was built for. An OpenBLAS carries kernels for many CPUs and picks one when
it starts (the environment variable `OPENBLAS_CORETYPE` can force one, for example the
kernels for Intel's Haswell, whose vectors hold 8 float32, on a CPU with AVX-512's 16).
Numba compiles for the CPU it runs on. The cell prints which kernels this BLAS chose and
what the CPU offers.

The loop has to be written so that LLVM can vectorise it. Here each pass takes four rows
of $Y$ and eight terms of the sum, vectorised along the pixels $j$:

$$Y[i + r, j] \mathrel{+}= \sum_{t < 8} W[i + r, p + t]\, X[p + t, j], \qquad r < 4,$$

8 vector loads of $X$, 4 loads and 4 stores of $Y$ for 32 multiply-adds. Two details
decide whether it vectorises at all:

* **the 32 weights are tuples**, that is, values in registers. Read from `W` inside the
  loop, they would have to be loaded again on every step, because LLVM cannot rule out
  that `W` overlaps `Y`, which the loop writes;
* **the rows are slices of one flat array.** Before a vectorised loop LLVM tests that the
  arrays it writes do not overlap those it reads. With a separate view per row that is one
  test per pair of rows, more than it is willing to make, and it keeps the scalar loop;
  slices of one array need one test.

tinymbv2's kernels used this loop, with the edges handled, for every pointwise layer on
planes larger than 16x16. They have since gone one step further, which no loop written in
Numba can express: `columns_nn` (`tinymbv2/kernels/numba/gemm.py`) in the race below is that step, explained
after it.
"""

# %%
import os
from threadpoolctl import threadpool_info, threadpool_limits
from tinymbv2.kernels.numba.gemm import columns_nn
from tinymbv2.kernels.numba.llvm import AVX512


@njit
def eight(w, r, p):
    return (w[r, p], w[r, p + 1], w[r, p + 2], w[r, p + 3],
            w[r, p + 4], w[r, p + 5], w[r, p + 6], w[r, p + 7])


@njit
def dot8(w, u):
    return ((w[0] * u[0] + w[1] * u[1] + w[2] * u[2] + w[3] * u[3])
            + (w[4] * u[4] + w[5] * u[5] + w[6] * u[6] + w[7] * u[7]))


@njit
def four_rows_eight_terms(w, x, y):
    """y = w @ x; w (M, K), x (K, P), y (M, P); M a multiple of 4, K of 8."""
    m, k = w.shape
    n = x.shape[1]
    xf, yf = x.reshape(-1), y.reshape(-1)  # rows: slices of one flat array
    for i in range(0, m, 4):
        y0 = yf[i * n:(i + 1) * n]
        y1 = yf[(i + 1) * n:(i + 2) * n]
        y2 = yf[(i + 2) * n:(i + 3) * n]
        y3 = yf[(i + 3) * n:(i + 4) * n]
        y0[:] = 0
        y1[:] = 0
        y2[:] = 0
        y3[:] = 0
        for p in range(0, k, 8):
            x0 = xf[p * n:(p + 1) * n]
            x1 = xf[(p + 1) * n:(p + 2) * n]
            x2 = xf[(p + 2) * n:(p + 3) * n]
            x3 = xf[(p + 3) * n:(p + 4) * n]
            x4 = xf[(p + 4) * n:(p + 5) * n]
            x5 = xf[(p + 5) * n:(p + 6) * n]
            x6 = xf[(p + 6) * n:(p + 7) * n]
            x7 = xf[(p + 7) * n:(p + 8) * n]
            w0, w1 = eight(w, i, p), eight(w, i + 1, p)
            w2, w3 = eight(w, i + 2, p), eight(w, i + 3, p)
            for j in range(n):
                u = (x0[j], x1[j], x2[j], x3[j], x4[j], x5[j], x6[j], x7[j])
                y0[j] += dot8(w0, u)
                y1[j] += dot8(w1, u)
                y2[j] += dot8(w2, u)
                y3[j] += dot8(w3, u)


blases = [i for i in threadpool_info() if i["user_api"] == "blas"]  # PyTorch may bring its own
blas = next((i for i in blases if "numpy" in i["filepath"]), blases[0] if blases else {})
print(f"BLAS: {blas.get('internal_api')} {blas.get('version')}, kernels for {blas.get('architecture')}"
      f" (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}); "
      f"CPU with AVX-512: {AVX512}")

# MobileNetV2's second block expands 16 channels to 96 on a 56x56 plane
W = rng.standard_normal((96, 16)).astype(np.float32)
X = rng.standard_normal((16, 56 * 56)).astype(np.float32)
Y = np.empty((96, 56 * 56), np.float32)
exact = W.astype(np.float64) @ X.astype(np.float64)
flop = 2 * W.shape[0] * W.shape[1] * X.shape[1]
contest = {
    "NumPy (BLAS)": lambda: np.matmul(W, X, out=Y),
    "four rows, eight terms": lambda: four_rows_eight_terms(W, X, Y),
    "gemm.columns_nn": lambda: columns_nn(W, X, Y, 0, X.shape[1]),
}
with threadpool_limits(limits=1, user_api="blas"):  # one core each
    for name, run in contest.items():
        t = median_time(run, repeat=51)
        err = np.abs(Y - exact).max()
        print(f"{name:<24} median {t * 1e6:6.0f} us  {flop / t / 1e9:5.0f} GFLOP/s  "
              f"(max error {err:.1e})")
        assert err < 1e-3, f"{name} computed a wrong product"

# %% [markdown]
r"""
All three compute the same product (the cell checks each against float64); which is fastest
depends on the CPU and on the BLAS build, and the times move with whatever else the machine
is doing. The lesson is not "loops beat BLAS", but to measure, and to know what the library
underneath was built for.

**The step: a block of $Y$ in registers.** The loop above still loads and stores four rows
of $Y$ on every pass of eight terms: 8 loads of $X$ and 8 loads and stores of $Y$ for 32
multiply-adds, and at 2048 columns per pass the rows do not stay in the fastest cache.
BLAS libraries do the opposite. They keep a small block of the output in registers for
the *whole* sum and store it once. AVX-512 has 32 vector registers of 16 float32; a block
of 6 rows by 64 columns is 24 of them (on a CPU with AVX2's 16 registers of 8, the block
is 6 rows by 16 columns, 12 registers):

$$\text{acc}[r, :] \mathrel{+}= W[i + r, p]\; X[p, j:j + 64], \qquad r < 6,\ p = 0, 1, \dots, K - 1,$$

each step 4 vector loads of $X$'s row and 6 broadcasts of $W$ for 24 fused
multiply-adds, which a core with two FMA units finishes in 12 cycles while the loads keep
up. No Numba loop can ask LLVM to keep `acc` in registers across the loop over $p$, so
`tinymbv2/kernels/numba/tile.py` writes the block in LLVM's own terms: a Numba
`@intrinsic` whose code generator emits the loop, the vector loads, `llvm.fma` and the
stores with llvmlite; Numba inlines it into ordinary `@njit` code. The two-hundred lines
also handle the edges (masked loads and stores past the last column, narrower blocks for
narrow strips), prefetch the next strip, and can write large outputs past the caches
(streaming stores). Each output is still summed in order of $p$, one FMA per term, so the
result is the same on every run and for any thread count. The Benchmarks page of the
documentation measures these products and the training step they serve.

A product whose sum runs *along* the rows of both operands, such as the weight gradient
$\sum_n \mathrm{d}Y[n]\, X[n]^\top$ (the sum over the pixels), takes the other shape of
loop in `tinymbv2/kernels/numba/gemm.py`: sixteen running dot products for a 4x4 block of the output, each kept
by LLVM as a vector of partial sums (`fastmath={"reassoc"}`, as in section 2.6).

## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see:
it prints `correct` or a hint naming the case that failed. The solutions are folded away
below each one.

### Exercise 2.1

Write the output-size formula: the number of output rows of a $k \times k$ convolution with
stride $s$ and zero padding $p$ on an input of $h$ rows. Check it against MobileNetV2's
stem: 224 px in, 112 out.
"""

# %%
from tinymbv2.exercises import check_conv_output_size


def conv_output_size(h, k, s, p):
    """Rows of the output (an int) for h input rows, kernel k, stride s, padding p."""
    raise NotImplementedError("your code here")


check_conv_output_size(conv_output_size)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def conv_output_size(h, k, s, p):
    return (h + 2 * p - k) // s + 1
```

The padded input has $h + 2p$ rows; a window of $k$ rows fits at $h + 2p - k + 1$
positions, of which every $s$-th is taken, starting with the first.

</details>

### Exercise 2.2

*im2col* turns a convolution into one matrix product, as many libraries compute it. For
every output pixel $(i, j)$, copy the $C k^2$ input values its window reads into one
column: `cols[n, c*k*k + a*k + b, i*Wo + j] = xp[n, c, i*s + a, j*s + b]`, with `xp` the
input zero-padded by $p$. Then `w.reshape(Co, -1) @ cols` is the convolution, reshaped to
$(N, C_o, H_o, W_o)$.
"""

# %%
from tinymbv2.exercises import check_im2col


def im2col(x, k, s, p):
    """x (N, C, H, W) -> cols (N, C*k*k, Ho*Wo) for a k x k window, stride s, padding p."""
    raise NotImplementedError("your code here")


check_im2col(im2col)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def im2col(x, k, s, p):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    cols = np.empty((n, c, k, k, ho, wo), x.dtype)
    for a in range(k):          # one strided slice per tap, as the reference kernels do
        for b in range(k):
            cols[:, :, a, b] = xp[:, :, a:a + s * ho:s, b:b + s * wo:s]
    return cols.reshape(n, c * k * k, ho * wo)
```

The axes (c, a, b) are in the order of `w.reshape(Co, -1)`'s columns, so the product lines
up. The price: every input value is copied up to $k^2$ times.

</details>

### Exercise 2.3

Write the weight gradient of a depthwise convolution derived in section 2.2: each tap
$w[c, 0, a, b]$ sums, over the images and the output pixels, the output gradient times the
input value the tap read.
"""

# %%
from tinymbv2.exercises import check_depthwise_weight_grad


def depthwise_weight_grad(x, gy, k, s, p):
    """x (N, C, H, W), gy = dL/dy (N, C, Ho, Wo) -> dL/dw (C, 1, k, k), stride s, padding p."""
    raise NotImplementedError("your code here")


check_depthwise_weight_grad(depthwise_weight_grad)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def depthwise_weight_grad(x, gy, k, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = gy.shape[2:]
    gw = np.zeros((x.shape[1], 1, k, k))
    for a in range(k):
        for b in range(k):
            window = xp[:, :, a:a + s * ho:s, b:b + s * wo:s]   # what tap (a, b) read
            gw[:, 0, a, b] = (gy * window).sum(axis=(0, 2, 3))  # over images and pixels
    return gw
```

This is `reference.depthwise_conv2d_backward_weight`, the forward's loop over taps with the
multiply-add turned into a sum of products.

</details>
"""
