"""Peak memory of one training step, tinymbv2 vs PyTorch, each in a fresh process.

Each child builds the model and the batch, runs a small warm-up step (32 px,
batch 2: compiles the kernels, allocates the optimizer state), records its
resident memory, runs one full step and reports the peak resident set size
(ru_maxrss) minus that baseline: the extra memory one step needs (activations
kept for backward, gradients, temporaries). ``python -m benchmarks.peak_memory``.
"""
from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import numpy as np
res, batch, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

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
    def step(x, y):
        loss = cross_entropy(m(Tensor(x)), y)
        opt.zero_grad(); loss.backward(); opt.step()
step(small_x, small_y)
import gc; gc.collect()
base = rss_mib()
step(x, y)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"baseline": base, "peak": peak}))
"""


def measure(res, batch, which):
    out = subprocess.run([sys.executable, "-c", CHILD, str(res), str(batch), which],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_memory_table(res=224, batch=8):
    print(f"\npeak memory of a training step at {res}px batch {batch} (fresh process each; "
          "peak RSS minus RSS after a warm-up step)")
    print(f"{'implementation':<22}{'extra MiB':>10}{'x PyTorch':>11}")
    results = {w: measure(res, batch, w) for w in ("pytorch", "numba", "reference")}
    base = results["pytorch"]["peak"] - results["pytorch"]["baseline"]
    for w, r in results.items():
        extra = r["peak"] - r["baseline"]
        name = w if w == "pytorch" else f"tinymbv2-{w}"
        print(f"{name:<22}{extra:>10.0f}{extra / base:>11.2f}")


if __name__ == "__main__":
    print_memory_table()
