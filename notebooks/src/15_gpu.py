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

# %% [markdown]
r"""
## Exercises

**1.** (With a GPU.) Time the depthwise forward kernel alone on a $(64, 144, 56, 56)$ float32
input, on the GPU and with the Numba kernel, and compute the effective memory bandwidth of
the GPU kernel (bytes read and written divided by the time).

<details><summary>Solution</summary>

```python
from tinymbv2.kernels import kernel_set
cupy_set = kernel_set("cupy")
x = np.random.default_rng(0).standard_normal((64, 144, 56, 56)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((144, 1, 3, 3)).astype(np.float32)
xg, wg = cupy.asarray(x), cupy.asarray(w)
cupy_set.depthwise_conv2d_forward(xg, wg, (1, 1), (1, 1)); cupy.cuda.Device().synchronize()
t0 = time.perf_counter()
for _ in range(10):
    cupy_set.depthwise_conv2d_forward(xg, wg, (1, 1), (1, 1))
cupy.cuda.Device().synchronize(); t = (time.perf_counter() - t0) / 10
print(f"{t * 1e3:.2f} ms, {2 * x.nbytes / t / 1e9:.0f} GB/s")
```

</details>

**2.** Why does the library keep the model's code free of `if device == "cuda"` branches?

<details><summary>Solution</summary>

Because every op asks `get_array_module` which array library owns its inputs and the kernel
dispatcher picks the kernel set from the arrays, the same model, loss and optimizer code runs
on both devices; a branch per device in every layer would double the code to read and test.

</details>
"""
