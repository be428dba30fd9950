# %% [markdown]
r"""
# 15. On the GPU with CuPy

CuPy is NumPy's interface on an NVIDIA GPU: `cupy.asarray(a)` copies an array to the GPU, the
same functions (`cupy.matmul`, `cupy.exp`, slicing, broadcasting) run there, and hand-written
CUDA kernels can be compiled at run time (`cupy.RawKernel`). tinymbv2 uses it the way DeZero
does: every op asks `get_array_module(x)` for `numpy` or `cupy`, and the kernel dispatcher
picks the CuPy kernel set (`tinymbv2.kernels.cupy`) whenever the arrays live on the GPU. So the *same* model code
trains on either device:

```python
model.to("cuda")                               # parameters and buffers become CuPy arrays
logits = model(Tensor(cupy.asarray(images)))   # every conv and BatchNorm runs a CUDA kernel
```

This chapter runs only where a GPU and CuPy are present (`pip install cupy-cuda12x` or
`cupy-cuda13x`, matching the CUDA driver). Elsewhere it says so and stops there, without an error.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import time
from pathlib import Path
import numpy as np

import tinymbv2
from tinymbv2 import Tensor, functional as F, optim

try:
    import cupy
    GPU = cupy.cuda.runtime.getDeviceCount() > 0
    reason = "" if GPU else "CuPy is installed but sees no GPU"
except Exception as exc:  # no CuPy, or no CUDA driver: both mean "no GPU here"
    GPU, reason = False, f"CuPy is not available ({type(exc).__name__}: {exc})"

if GPU:
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print("GPU:", props["name"].decode(), f"| {props['totalGlobalMem'] / 2**30:.0f} GiB | CuPy", cupy.__version__)
else:
    print("No GPU or no CuPy on this machine:", reason)
    print("The rest of this chapter is skipped here; run it on a machine with an NVIDIA GPU and CuPy.")

# %% [markdown]
r"""
## 15.1 One thread per output element

The depthwise convolution is the one kernel written by hand (the $1\times1$ convolutions are
matrix products, which cuBLAS does best). Its forward pass gives every output element its own
GPU thread, which sums the $3\times3$ products of its window; a "grid-stride loop" lets a fixed
number of threads cover any size. Here is the CUDA source the library compiles (it is plain
text, so we can read it even without a GPU):
"""

# %%
source = (Path(tinymbv2.__file__).parent / "kernels" / "cupy" / "conv.py").read_text()
start = source.index("template <typename T>\n__global__ void dw_forward")
print(source[start:source.index("}\n}", start) + 3])

# %% [markdown]
r"""
## 15.2 Every GPU kernel against the reference kernels
"""

# %%
if GPU:
    from tinymbv2.kernels import kernel_set
    cupy_set, reference = kernel_set("cupy"), kernel_set("reference")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 17, 17)); wd = rng.standard_normal((32, 1, 3, 3))
    gy = rng.standard_normal((4, 32, 9, 9))          # a stride-2 depthwise output's shape
    wdense = rng.standard_normal((16, 32, 3, 3)); wp = rng.standard_normal((48, 32, 1, 1))
    gamma, beta = rng.standard_normal(32), rng.standard_normal(32)
    checks = {
        "depthwise forward": lambda k, a: k.depthwise_conv2d_forward(a(x), a(wd), (2, 2), (1, 1)),
        "depthwise backward-input": lambda k, a: k.depthwise_conv2d_backward_input(a(gy), a(wd), x.shape, (2, 2), (1, 1)),
        "depthwise backward-weight": lambda k, a: k.depthwise_conv2d_backward_weight(a(gy), a(x), wd.shape, (2, 2), (1, 1)),
        "dense forward": lambda k, a: k.conv2d_forward(a(x), a(wdense), (2, 2), (1, 1)),
        "pointwise forward": lambda k, a: k.pointwise_conv2d_forward(a(x), a(wp)),
        "batchnorm forward (train)": lambda k, a: k.batch_norm_forward_train(a(x), a(gamma), a(beta), 1e-5)[0],
    }
    for name, fn in checks.items():
        ours, ref = cupy.asnumpy(fn(cupy_set, cupy.asarray)), fn(reference, np.asarray)
        print(f"{name:28s} max |cupy - reference| = {np.abs(ours - ref).max():.1e}")
        assert np.abs(ours - ref).max() < 1e-9 * max(1.0, np.abs(ref).max()), name   # float64 inputs
    print("checked: every kernel agrees with the reference kernels to float64 rounding")

# %% [markdown]
r"""
## 15.3 The whole model on the GPU: same logits, faster steps
"""

# %%
if GPU:
    from tinymbv2.models import mobilenet_v2
    batch = 64 if TINYMBV2_FAST else 128
    xb = np.random.default_rng(0).standard_normal((batch, 3, 96, 96)).astype(np.float32)
    yb = np.random.default_rng(1).integers(0, 10, batch)
    cpu_model = mobilenet_v2(num_classes=10, seed=0).eval()
    gpu_model = mobilenet_v2(num_classes=10, seed=0).eval().to("cuda")
    with tinymbv2.no_grad():
        y_cpu = cpu_model(Tensor(xb[:8])).data
        y_gpu = cupy.asnumpy(gpu_model(Tensor(cupy.asarray(xb[:8]))).data)
    print(f"eval logits, max |GPU - CPU| = {np.abs(y_gpu - y_cpu).max():.1e}")
    assert np.abs(y_gpu - y_cpu).max() < 1e-4 * max(1.0, np.abs(y_cpu).max())

    def step_time(model, xs, device_sync, steps=3):
        model.train()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        times = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(Tensor(xs)), yb)
            opt.zero_grad(); loss.backward(); opt.step(); device_sync()
            times.append(time.perf_counter() - t0)
        return min(times[1:])             # the first step compiles the kernels

    t_gpu = step_time(gpu_model, cupy.asarray(xb), cupy.cuda.Device().synchronize)
    t_cpu = step_time(cpu_model, xb[:16], lambda: None, steps=1) * batch / 16
    print(f"training step, batch {batch} at 96x96: GPU {t_gpu * 1e3:.0f} ms, "
          f"CPU (Numba, scaled from 16 images) {t_cpu * 1e3:.0f} ms, speed-up {t_cpu / t_gpu:.0f}x")
    assert t_gpu < t_cpu, (t_gpu, t_cpu)
    print("checked: the GPU's training step is faster than the CPU's")

# %% [markdown]
r"""
## Exercises

These run on any machine: none needs a GPU. Each gives a function to write and a check that
runs it on cases you do not see: it prints `correct` or `not yet:` with a hint naming the case
that fails.

### Exercise 15.1

Be one GPU thread. Write, in plain Python, what thread `idx` of the `dw_forward` kernel printed
in 15.1 computes: decode `idx` into the output element `(n, c, oh, ow)` (row-major, `ow`
fastest), then sum its window, skipping the taps that fall outside the input. The check
compares with the reference kernels' depthwise convolution.
"""

# %%
from tinymbv2.exercises import check_dw_thread

def dw_thread(x, w, idx, stride, padding):
    """The output value thread idx computes.

    x: (N, C, H, W); w: (C, 1, kh, kw); idx: a flat index into the output (N, C, Ho, Wo);
    stride (sh, sw); padding (ph, pw). Returns a float.
    """
    raise NotImplementedError("your code here")

check_dw_thread(dw_thread)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def dw_thread(x, w, idx, stride, padding):
    _, C, H, W = x.shape
    kh, kw = w.shape[2:]
    (sh, sw), (ph, pw) = stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    ow, t = idx % Wo, idx // Wo
    oh, t = t % Ho, t // Ho
    c, n = t % C, t // C
    acc = 0.0
    for i in range(kh):
        h = oh * sh - ph + i
        if not 0 <= h < H:
            continue                      # a zero of the padding
        for j in range(kw):
            v = ow * sw - pw + j
            if 0 <= v < W:
                acc += w[c, 0, i, j] * x[n, c, h, v]
    return acc
```

In Python, `x[n, c, -1, v]` is the last row, not an error and not a zero: the bounds test is
what makes the padding zero, here as in CUDA. On the GPU thousands of threads run this body at
once, each with its own `idx`; consecutive threads take consecutive `ow`, so they read
neighbouring addresses of `x`, which the memory system serves together.

</details>

### Exercise 15.2

The library launches every kernel as a 1-D grid of blocks of 256 threads with a grid-stride
loop (thread $t$ handles elements $t, t + G, t + 2G, \dots$ with $G$ = grid $\times$ block
threads), and caps the grid at $2^{20}$ blocks. Write `launch_geometry(total, block, max_grid)`:
the number of blocks for `total` elements, and how many times the busiest thread goes round
the loop.
"""

# %%
from tinymbv2.exercises import check_launch_geometry

def launch_geometry(total, block=256, max_grid=2**20):
    """-> (grid, trips): blocks launched (0 for no work), loop trips of the busiest thread."""
    raise NotImplementedError("your code here")

check_launch_geometry(launch_geometry)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def launch_geometry(total, block=256, max_grid=2**20):
    grid = min(-(-total // block), max_grid)                 # ceil(total / block), capped
    trips = -(-total // (grid * block)) if grid else 0       # ceil(total / threads)
    return grid, trips
```

`-(-a // b)` is the integer ceiling, exact for any size (a float `math.ceil(a / b)` can round
wrongly beyond $2^{53}$). Below the cap each thread does one trip; above it, the loop lets a
fixed grid cover any size, so the launch never needs more blocks than the GPU can schedule.

</details>

### Exercise 15.3

Code that runs on both devices takes its array module from its inputs (`xp =
get_array_module(labels)` in the library) and makes every new array with `xp`. Write
`one_hot(labels, num_classes, xp)` that way: a float32 array of shape `(N, num_classes)` with
a 1 at `[i, labels[i]]`. The check runs it with NumPy, with a stand-in for CuPy whose arrays,
like CuPy's, refuse to mix with NumPy's, and with CuPy itself where there is a GPU.
"""

# %%
from tinymbv2.exercises import check_one_hot

def one_hot(labels, num_classes, xp):
    """labels: (N,) ints, an array of xp (numpy or cupy). Returns (N, num_classes) float32, of xp."""
    raise NotImplementedError("your code here")

check_one_hot(one_hot)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def one_hot(labels, num_classes, xp):
    out = xp.zeros((labels.shape[0], num_classes), dtype=xp.float32)
    out[xp.arange(labels.shape[0]), labels] = 1
    return out
```

`np.zeros` here would make the result in the computer's memory while the labels are on the
GPU, and indexing one with the other fails: CuPy refuses to copy its arrays to the host
implicitly. With `xp` the same lines run on either device.

</details>
"""
