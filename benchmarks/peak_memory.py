"""Peak memory of one training step, tinymbv2 vs PyTorch, each in a fresh process.

Each child builds the model and the batch and runs one full warm-up step
(compiles every kernel path the step takes, allocates the optimizer state),
returns the heap's free memory to the system (``malloc_trim``), records its
resident memory, resets the kernel's high-water mark of resident
memory (``/proc/self/clear_refs``), runs one more step and reports the peak
(VmHWM) minus that baseline: the extra memory one step needs (activations kept
for backward, gradients, temporaries). Where the mark cannot be reset, the
warm-up is a small step (32 px, batch 2) and the peak is ``ru_maxrss``, which a
first compile of a kernel path can inflate. ``python -m benchmarks.peak_memory``.
"""
from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
res, batch, which, fuse = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

rng = np.random.default_rng(0)
x = rng.standard_normal((batch, 3, res, res)).astype(np.float32)
y = rng.integers(0, 1000, batch)
small_x, small_y = x[:2, :, :32, :32].copy(), y[:2]
if which == "pytorch":
    import torch, torchvision
    torch.set_num_threads(2)
    m = torchvision.models.mobilenet_v2()
    opt = torch.optim.RMSprop(m.parameters(), lr=1e-4, alpha=0.9, momentum=0.9, eps=1e-3)
    def step(x, y):
        loss = torch.nn.functional.cross_entropy(m(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
else:
    import tinymbv2
    from tinymbv2 import optim, Tensor
    from tinymbv2.functional import cross_entropy
    from tinymbv2.models import mobilenet_v2
    tinymbv2.use_kernels(which)
    m = mobilenet_v2()
    opt = optim.RMSprop(m.parameters(), lr=1e-4, alpha=0.9, momentum=0.9, eps=1e-3)
    net = tinymbv2.fuse(m) if fuse else m
    def step(x, y):
        loss = cross_entropy(net(Tensor(x)), y)
        opt.zero_grad(); loss.backward(); opt.step()
import gc

def high_water_mib():
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # test that the high-water mark can be reset
    resettable = True
except OSError:
    resettable = False
step(x, y) if resettable else step(small_x, small_y)
gc.collect()
try:  # give the heap's free memory back, so the baseline is what is live (glibc)
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
except (OSError, AttributeError):
    pass
base = rss_mib()
if resettable:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
step(x, y)
peak = high_water_mib() if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"baseline": base, "peak": peak}))
"""


def measure(res, batch, which, fuse=True):
    out = subprocess.run([sys.executable, "-c", CHILD, str(res), str(batch), which, str(int(fuse))],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_memory_table(res=224, batch=8, fuse=True):
    print(f"\npeak memory of a training step at {res}px batch {batch} (fresh process each; "
          "after a full warm-up step: peak resident memory during one step minus the live memory before it)")
    print(f"{'implementation':<22}{'extra MiB':>10}{'x PyTorch':>11}")
    results = {w: measure(res, batch, w, fuse) for w in ("pytorch", "numba", "reference")}
    base = results["pytorch"]["peak"] - results["pytorch"]["baseline"]
    for w, r in results.items():
        extra = r["peak"] - r["baseline"]
        name = w if w == "pytorch" else f"tinymbv2-{w}"
        print(f"{name:<22}{extra:>10.0f}{extra / base:>11.2f}")


if __name__ == "__main__":
    print_memory_table()
