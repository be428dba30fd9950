# %% [markdown]
r"""
# 19. Data parallelism: one model, many workers

Training MobileNetV2 on ImageNet takes days on one machine. The common way out is **data
parallelism**: $P$ workers each hold the whole model, each computes the forward and backward
pass on its own shard of the batch, and the gradients are **averaged** across the workers
before every optimizer step. The workers start from the same weights and take the same
steps, so they stay equal without ever sending the weights again; only gradients travel.

This chapter shows why that is exactly training on a $P$ times larger batch (19.1), the one
layer of MobileNetV2 that breaks the equality, BatchNorm, and how SyncBatchNorm repairs it,
checked with two real MPI processes (19.2); how `DistributedDataParallel` hides the
averaging behind the backward pass with *buckets*, drawn from a real 2-rank run's timings
(19.3); and the ring all-reduce and the cost model that says how far it scales (19.4), fed
with step times measured here. 19.5 shows how to run it. The code is
`tinymbv2.distributed`, built on MPI through mpi4py (the `distributed` extra installs
mpi4py and Open MPI from PyPI wheels); every number in the prose is printed or asserted by
the cell beside it.
"""

# %%
import os
TINYMBV2_FAST = os.environ.get("TINYMBV2_FAST") == "1"  # set by CI: smaller runs, same code

import inspect
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import matplotlib.pyplot as plt

import tinymbv2
from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2 import optim
from tinymbv2.distributed import assign_buckets, mpirun_command, mpirun_env
from tinymbv2.distributed.cost_model import (GBIT, StepTime, best_workers, bytes_sent_per_worker,
                                             interpolated_compute, linear_compute,
                                             ring_allreduce_seconds, scaling)
from tinymbv2.models import mobilenet_v2
from tinymbv2.train import load_trained

work = Path(tempfile.mkdtemp(prefix="ch19_"))      # the scripts and files the ranks write
tinymbv2.use_kernels("reference")                  # float64 checks: no Numba compilation


def small_net():
    """MobileNetV2-0.35 for 16x16 images, float64, seed 0: the same weights every time."""
    return mobilenet_v2(0.35, 10, dropout=0.0, small_input=True, seed=0).double()


def gradient(model, images, labels):
    """The mean cross-entropy over ``images`` and every parameter's gradient, as one vector."""
    for p in model.parameters():
        p.grad = None
    loss = F.cross_entropy(model(Tensor(images)), Tensor(labels))
    loss.backward()
    return float(loss.data), np.concatenate([p.grad.ravel() for p in model.parameters()])


def rel_diff(a, b):
    """max |a - b| / max |b|."""
    return float(np.abs(a - b).max() / np.abs(b).max())

# %% [markdown]
r"""
## 19.1 Averaging gradients is training on a larger batch

The loss of a batch of $n$ samples is the **mean** of their losses,
$L = \frac{1}{n} \sum_{i=1}^{n} \ell_i(\theta)$. Cut a batch of $2b$ into two shards of $b$,
with losses $L_1 = \frac{1}{b}\sum_{i \le b} \ell_i$ and $L_2 = \frac{1}{b}\sum_{i > b} \ell_i$.
The mean of the two means is the mean of the whole:

$$
\frac{L_1 + L_2}{2} = \frac{1}{2b} \sum_{i=1}^{2b} \ell_i = L ,
$$

and since the gradient is linear, $\frac{1}{2}(\nabla L_1 + \nabla L_2) = \nabla L$. With $P$
shards of $b$, the same: the average of the $P$ workers' gradients is the gradient of the
mean loss over the $Pb$ samples, so SGD on $P$ workers takes the step one worker would take
on the whole batch. (The shards must be equal: with unequal shards the plain average would
weigh a sample of the smaller shard more. PyTorch's `DistributedSampler`, and tinymbv2's,
pad the last shards with repeated samples to keep them equal.)

The equation needs each $\ell_i$ to depend on sample $i$ alone. Below it is checked on
MobileNetV2-0.35 in float64 in **evaluation mode**, where BatchNorm uses its stored running
statistics and is a fixed affine map of each sample: one batch of $2b = 8$ images against two
shards of 4.
"""

# %%
b = 4
rng = np.random.default_rng(0)
images = rng.standard_normal((2 * b, 3, 16, 16))
labels = rng.integers(0, 10, 2 * b)
shards = [(images[:b], labels[:b]), (images[b:], labels[b:])]

model = small_net().eval()
loss_full, g_full = gradient(model, images, labels)
(loss_1, g_1), (loss_2, g_2) = (gradient(model, x, y) for x, y in shards)
g_avg = (g_1 + g_2) / 2
print(f"{g_full.size} gradient values")
print(f"loss of the batch {loss_full:.15f}, mean of the shards' {(loss_1 + loss_2) / 2:.15f}")
print(f"evaluation mode: max |average of the shards' gradients - the batch's|\n"
      f"  = {np.abs(g_avg - g_full).max():.2e}  (relative {rel_diff(g_avg, g_full):.1e})")
assert rel_diff(g_avg, g_full) < 1e-13        # float64 rounding: a few units of 1e-16

# %% [markdown]
r"""
Equal to float64 rounding (the two sides add the same numbers in a different order).

## 19.2 BatchNorm breaks it; SyncBatchNorm repairs it

In **training mode** BatchNorm normalises each channel by the mean and variance **of the
batch it is given**, $\hat x = (x - \mu_B)/\sqrt{\sigma_B^2 + \epsilon}$ (chapter 3). Every
sample's output then depends on every other sample of the batch, and $\ell_i$ is no longer a
function of sample $i$ alone. A worker sees only its shard, so it normalises by the shard's
statistics, which differ from the batch's, and the average of the shards' gradients is no
longer the batch's gradient. The same two shards, the same weights, training mode:
"""

# %%
model.train()
loss_full_t, g_full_t = gradient(model, images, labels)
(loss_1t, g_1t), (loss_2t, g_2t) = (gradient(model, x, y) for x, y in shards)
g_avg_t = (g_1t + g_2t) / 2
print(f"training mode: loss of the batch {loss_full_t:.6f}, mean of the shards' "
      f"{(loss_1t + loss_2t) / 2:.6f}")
print(f"training mode: max |average of the shards' gradients - the batch's|\n"
      f"  = {np.abs(g_avg_t - g_full_t).max():.2e}  (relative {rel_diff(g_avg_t, g_full_t):.2f})")
assert rel_diff(g_avg_t, g_full_t) > 1e-2

# the statistics the first BatchNorm sees: the stem convolution's output, per channel
stem = model.features[0][0]
with tinymbv2.no_grad():
    z_full = stem(Tensor(images)).numpy()
    z_shards = [stem(Tensor(x)).numpy() for x, _ in shards]
print("\nwhat the first BatchNorm sees, channels 0-3:")
for name, z in [("batch  ", z_full), ("shard 1", z_shards[0]), ("shard 2", z_shards[1])]:
    mean, var = z.mean(axis=(0, 2, 3))[:4], z.var(axis=(0, 2, 3))[:4]
    print(f"  {name} mean", " ".join(f"{v:7.4f}" for v in mean), "  var",
          " ".join(f"{v:6.4f}" for v in var))

# %% [markdown]
r"""
The difference is not rounding: the gradients differ in their leading digits. (With
shards of 32 images or more the shard statistics get close to the batch's and training
still works, which is why many data-parallel runs keep plain BatchNorm; with shards of a
few images, as in detection and segmentation, the statistics are noise.)

**SyncBatchNorm** computes the statistics of the whole batch, over all workers. It needs
three numbers per channel from each worker $r$: the count $M_r$ of values (images times
pixels), their sum $S_r = \sum x$ and their sum of squares $Q_r = \sum x^2$. One
**all-reduce** (every worker ends with the sum over workers) of these $2C + 1$ numbers gives
$M = \sum_r M_r$, $S = \sum_r S_r$, $Q = \sum_r Q_r$, and every worker then computes the same

$$
\mu = \frac{S}{M}, \qquad \sigma^2 = \frac{Q}{M} - \mu^2 ,
$$

the mean and (biased) variance of the whole batch, and normalises its own shard with them.
Averaging the workers' means would be right only for equal counts, and averaging their
variances is wrong even then: it leaves out the spread of the shard means around $\mu$.
The backward pass needs two more sums per channel over the whole batch, $\sum g$ and
$\sum g \hat x$ (the two means in BatchNorm's backward formula of chapter 3): one more
all-reduce. The cell combines the two shards' sums of the stem's output by hand:
"""

# %%
M_r = np.array([z[:, 0].size for z in z_shards], dtype=np.float64)
S_r = np.stack([z.sum(axis=(0, 2, 3)) for z in z_shards])
Q_r = np.stack([np.square(z).sum(axis=(0, 2, 3)) for z in z_shards])
M, S, Q = M_r.sum(), S_r.sum(axis=0), Q_r.sum(axis=0)     # what the all-reduce adds up
mu, var = S / M, Q / M - (S / M) ** 2
print(f"M = {M:.0f} values per channel")
print(f"max |mu - the batch's mean|           = {np.abs(mu - z_full.mean(axis=(0, 2, 3))).max():.1e}")
print(f"max |sigma^2 - the batch's variance|  = {np.abs(var - z_full.var(axis=(0, 2, 3))).max():.1e}")
wrong_var = np.mean([z.var(axis=(0, 2, 3)) for z in z_shards], axis=0)
print(f"the average of the shards' variances is off by up to "
      f"{np.abs(wrong_var - z_full.var(axis=(0, 2, 3))).max():.3f}")
assert np.allclose(mu, z_full.mean(axis=(0, 2, 3)), atol=1e-12)
assert np.allclose(var, z_full.var(axis=(0, 2, 3)), atol=1e-12)

# %% [markdown]
r"""
(The formula $Q/M - \mu^2$ subtracts two large numbers when the mean is large against the
spread; `SyncBatchNorm` sums in float64 whatever the activations' dtype, which keeps that
harmless for activations of a trained network.)

### Two real processes

Now the real thing: two MPI processes (**ranks**), started by `mpirun -n 2`, each running the
function `one_rank` below on its shard of 4 images (the cell writes the function's source into
a script file, which `mpirun` starts on every rank; the notebook itself never calls it). It
wraps the model in
`DistributedDataParallel` (19.3), which averages the gradients across the ranks during the
backward pass, once with the model's BatchNorms as they are and once converted to
`SyncBatchNorm` by `convert_sync_batchnorm`. Rank 0 writes the averaged gradients to a file
this notebook compares with its one-process results above.

`mpirun_command` gives the `mpirun` of the virtual environment (Open MPI from its PyPI
wheel) and `mpirun_env` the environment it needs: Open MPI's permission to run as root, and
one thread per rank for NumPy and Numba. `PYTHONPATH` is set to the folder of the tinymbv2
this notebook imported, so that the ranks run the same code.
"""

# %%
def one_rank(data_path, out_path):
    """What each rank runs: the small net on its shard, with BatchNorm, then SyncBatchNorm."""
    import numpy as np

    import tinymbv2
    from tinymbv2 import Tensor
    from tinymbv2 import functional as F
    from tinymbv2.distributed import DistributedDataParallel, convert_sync_batchnorm, get_world
    from tinymbv2.models import mobilenet_v2

    tinymbv2.use_kernels("reference")
    world = get_world()                                   # this rank, of world.size
    data = np.load(data_path)
    b = len(data["labels"]) // world.size
    mine = slice(world.rank * b, (world.rank + 1) * b)  # this rank's shard
    out = {}
    for mode in ("batchnorm", "syncbatchnorm"):
        model = mobilenet_v2(0.35, 10, dropout=0.0, small_input=True, seed=0).double()
        if mode == "syncbatchnorm":
            model = convert_sync_batchnorm(model)
        ddp = DistributedDataParallel(model, bucket_cap_mb=0.25)
        x, y = Tensor(data["images"][mine]), Tensor(data["labels"][mine])
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()                                   # averaged over the ranks on the way
        out[mode] = np.concatenate([p.grad.ravel() for p in model.parameters()])
    print(f"rank {world.rank} of {world.size}: {b} images, {len(ddp.buckets)} buckets")
    if world.rank == 0:
        np.savez(out_path, **out)


def write_script(name, main):
    """A script of the function ``main``'s source that calls it on the script's arguments."""
    path = work / name
    path.write_text(f"import sys\n\n\n{inspect.getsource(main)}\n\n{main.__name__}(*sys.argv[1:])\n")
    return path


CLI = Path(sys.executable).parent / "tinymbv2"        # the tinymbv2 command of this environment


def run_ranks(n, program, *args, timeout=600):
    """Run ``[*program, *args]`` on ``n`` ranks with mpirun; print what they print."""
    env = mpirun_env(threads=1)
    env["PYTHONPATH"] = str(Path(tinymbv2.__file__).resolve().parents[1])
    argv = mpirun_command(n, [*program, *map(str, args)])
    shown = {str(argv[0]): "mpirun", sys.executable: "python", str(CLI): "tinymbv2"}
    print("$", " ".join(shown.get(str(a), str(a)) for a in argv).replace(str(work), "$WORK"))
    done = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, timeout=timeout)
    print(done.stdout.replace("\x1b[0m", "").replace(str(work), "$WORK").strip())  # less colour resets
    if done.returncode != 0:
        raise RuntimeError(f"mpirun ended with {done.returncode}:\n{done.stderr[-3000:]}")


np.savez(work / "data.npz", images=images, labels=labels)
start = time.perf_counter()
run_ranks(2, [sys.executable, write_script("ranks.py", one_rank)], work / "data.npz", work / "grads.npz")
print(f"({time.perf_counter() - start:.1f} s, MPI's start-up included)")
ranks = np.load(work / "grads.npz")
print(f"2 ranks, BatchNorm: max |DDP's gradient - the shards' average (19.2)| = "
      f"{np.abs(ranks['batchnorm'] - g_avg_t).max():.1e}")
print(f"  relative difference from one process on the 8 images: "
      f"{rel_diff(ranks['batchnorm'], g_full_t):.2f}")
print(f"2 ranks, SyncBatchNorm: max |DDP's gradient - one process's| = "
      f"{np.abs(ranks['syncbatchnorm'] - g_full_t).max():.1e}")
print(f"  relative difference: {rel_diff(ranks['syncbatchnorm'], g_full_t):.1e}")
assert rel_diff(ranks["batchnorm"], g_avg_t) < 1e-12
assert rel_diff(ranks["syncbatchnorm"], g_full_t) < 1e-12

# %% [markdown]
r"""
With plain BatchNorm the two ranks compute exactly the average of the shards' gradients of
19.2, not the batch's; with SyncBatchNorm they compute the batch's gradient, to float64
rounding. The tests go further (tests/distributed/test_mpi_runs.py): after 5 SGD steps the
two ranks with SyncBatchNorm hold the weights one process trains on the whole batch, and
without it the weights PyTorch's `DistributedDataParallel` (gloo backend, 2 processes) trains
from the same start, both to $10^{-10}$ relative.

## 19.3 Buckets and overlap

An all-reduce of every gradient after the backward pass would leave the network idle while
the bytes travel. But the backward pass produces the gradients from the **last** layer to the
first, and the last layers' gradients are final long before the pass ends. PyTorch's
`DistributedDataParallel`, and tinymbv2's, use that:

1. At construction the parameters are packed, in **reverse** order, into **buckets** of at
   most `bucket_cap_mb` MiB: flat buffers, one all-reduce each. (One all-reduce per
   parameter would pay the per-message latency 158 times a step for MobileNetV2; one for
   everything could start only at the end.)
2. A hook on each parameter copies its gradient, times $1/P$, into its bucket's slot as soon
   as the backward pass has finished it. When a bucket is full, its all-reduce starts,
   non-blocking (`Iallreduce`), and the backward pass goes on.
3. At the end of the backward pass the all-reduces are waited for and the averaged slots
   become the parameters' `grad`.

MobileNetV2-1.0 (1000 classes) has 3.5 million parameters, 14 MB of float32 gradients:
"""

# %%
big = mobilenet_v2(1.0, 1000, seed=0)
names = [n for n, _ in big.named_parameters()]
params = [p.data for _, p in big.named_parameters()]
grad_bytes = sum(p.nbytes for p in params)
print(f"MobileNetV2-1.0: {len(params)} parameter tensors, {sum(p.size for p in params):,} values,")
print(f"{grad_bytes / 1e6:.2f} MB of float32 gradient  (below, f.N stands for features.N)")
for cap_mb in (25, 1):
    buckets = assign_buckets(params, int(cap_mb * 2 ** 20))
    print(f"\nbucket_cap_mb={cap_mb}: {len(buckets)} bucket{'s' * (len(buckets) > 1)}")
    for k, bucket in enumerate(buckets):
        first, last = (names[bucket.members[i]].replace("features.", "f.") for i in (0, -1))
        print(f"  {k:2d}: {bucket.nbytes / 2 ** 20:5.2f} MiB, {len(bucket.members):3d} tensors, "
              f"{first} ... {last}")
    assert all(bk.nbytes <= cap_mb * 2 ** 20 or len(bk.members) == 1 for bk in buckets)
    order = [i for bk in buckets for i in bk.members]
    assert order == list(reversed(range(len(params))))   # reverse parameter order

# %% [markdown]
r"""
At the default cap of 25 MiB the whole gradient fits in one bucket: MobileNetV2 is small, and
its all-reduce can start only when the first layer's gradient is done, at the end. At 1 MiB
there are 14 buckets. A bucket is closed before a gradient that would take it over the cap,
so a tensor larger than the cap travels alone: the classifier's weight (1.28 million values,
4.88 MiB) is bucket 1 by itself, after its bias alone in bucket 0, and so is the last 1x1
convolution's weight (1.56 MiB). The classifier's gradients are the first the backward pass
computes, so buckets 0 and 1 can go at once; the early layers' 64 small tensors share the
last bucket.

The drawing comes from a real run: 2 ranks, MobileNetV2-1.0 with 1 MiB buckets, one thread
each. `DistributedDataParallel` does not record times, so the rank's function subclasses it
(`TimedDDP`) and writes down, on rank 0, when each gradient is ready, when each bucket's all-reduce starts, and when
it is *seen* to have finished: MPI reports completion only when asked, so that time is the
next moment the backward pass looked (the next parameter's hook) or, after the backward pass,
the wait.
"""

# %%
def timeline_rank(size, batch, steps, out_path):
    """What each rank runs: MobileNetV2-1.0's training steps; rank 0 saves the last one's events."""
    import time

    import numpy as np

    from tinymbv2 import Tensor
    from tinymbv2 import functional as F
    from tinymbv2.distributed import DistributedDataParallel, get_world
    from tinymbv2.models import mobilenet_v2

    class TimedDDP(DistributedDataParallel):
        """DistributedDataParallel that notes the time of each event of a backward pass."""

        def _mark_ready(self, index, grad):
            started = self._next
            super()._mark_ready(index, grad)          # may start one bucket's Iallreduce or more
            now = time.perf_counter()
            self.ready.append((index, now))
            self.started.update({k: now for k in range(started, self._next)})
            for k, request in enumerate(self._requests):
                if k not in self.done and request.Test():   # finished since the last look
                    self.done[k] = now

        def _finish(self):
            self.backward_end = time.perf_counter()
            for k, request in enumerate(self._requests):
                if k not in self.done:
                    request.Wait()
                    self.done[k] = time.perf_counter()
            super()._finish()

    size, batch, steps = int(size), int(batch), int(steps)
    world = get_world()
    ddp = TimedDDP(mobilenet_v2(1.0, 1000, seed=0), bucket_cap_mb=1)
    rng = np.random.default_rng(world.rank)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 1000, batch)
    for step in range(steps):                 # the first steps warm up; the last one is kept
        ddp.ready, ddp.started, ddp.done = [], {}, {}
        world.comm.Barrier()                  # the ranks start each step together
        tb = time.perf_counter()
        loss = F.cross_entropy(ddp(Tensor(x)), Tensor(y))
        t0 = time.perf_counter()
        loss.backward()
        t1 = time.perf_counter()
    # each rank's backward pass, in ms since the step's barrier
    spans = world.comm.gather((1e3 * (t0 - tb), 1e3 * (ddp.backward_end - tb)), root=0)
    if world.rank == 0:
        for r, (a, e) in enumerate(spans):
            print(f"rank {r}: backward pass from {a:.1f} to {e:.1f} ms after the barrier")
        n = len(ddp.buckets)
        np.savez(out_path, ready=np.array([(i, t - t0) for i, t in ddp.ready]),
                 started=np.array([ddp.started[k] - t0 for k in range(n)]),
                 done=np.array([ddp.done[k] - t0 for k in range(n)]),
                 backward_end=ddp.backward_end - t0, backward=t1 - t0,
                 nbytes=np.array([bk.nbytes for bk in ddp.buckets]))
        print(f"rank 0: batch {batch} at {size} px, backward {t1 - t0:.3f} s, {n} buckets")


size, batch, steps = (32, 2, 2) if TINYMBV2_FAST else (128, 8, 3)
start = time.perf_counter()
run_ranks(2, [sys.executable, write_script("timeline.py", timeline_rank)], size, batch, steps,
          work / "timeline.npz")
print(f"({time.perf_counter() - start:.0f} s, MPI's start-up and the warm-up steps included)")
tl = np.load(work / "timeline.npz")
ready = {int(i): t for i, t in tl["ready"]}
bucket_of = {i: k for k, bk in enumerate(assign_buckets(params, 2 ** 20)) for i in bk.members}
first_ready = [min(t for i, t in ready.items() if bucket_of[i] == k) for k in range(len(tl["done"]))]
ms = 1e3
print(f"backward pass {tl['backward_end'] * ms:.1f} ms (with the wait for the last all-reduces: "
      f"{tl['backward'] * ms:.1f} ms)")
print("ms after the backward pass began:")
print(" bucket  MiB   first ready  started  seen done")
for k in range(len(tl["done"])):
    print(f"  {k:4d} {tl['nbytes'][k] / 2 ** 20:5.2f} {first_ready[k] * ms:10.1f} "
          f"{tl['started'][k] * ms:9.1f} {tl['done'][k] * ms:9.1f}")
hidden = sum(1 for t in tl["done"] if t <= tl["backward_end"])
print(f"{hidden} of {len(tl['done'])} all-reduces seen done before the backward pass ended")
assert np.all(np.diff(tl["started"]) >= 0)             # buckets start in order
assert np.all(tl["started"] <= tl["backward_end"])     # each starts during the backward pass



def size_label(nbytes):
    return f"{nbytes / 2 ** 20:.1f} MiB" if nbytes >= 2 ** 17 else f"{nbytes / 2 ** 10:.0f} KiB"


fig, ax = plt.subplots(figsize=(10, 4.8))
n = len(tl["done"])
ax.barh(n, tl["backward_end"] * ms, left=0, height=0.6, color="#9cc3e6", label="backward pass")
ax.plot([t * ms for t in ready.values()], [n] * len(ready), "|", color="#245", ms=9,
        label="a gradient is ready (hook)")
for k in range(n):
    y = n - 1 - k
    ax.barh(y, (tl["started"][k] - first_ready[k]) * ms, left=first_ready[k] * ms, height=0.6,
            color="#ddd", label="bucket filling" if k == 0 else None)
    ax.barh(y, max(tl["done"][k] - tl["started"][k], 1e-4) * ms, left=tl["started"][k] * ms,
            height=0.6, color="#f6a04d", label="all-reduce in flight (until seen done)" if k == 0 else None)
ax.axvline(tl["backward_end"] * ms, color="k", lw=0.8, ls="--")
ax.set_yticks(list(range(n + 1)))
ax.set_yticklabels([f"bucket {n - 1 - y} ({size_label(tl['nbytes'][n - 1 - y])})"
                    for y in range(n)] + ["backward"], fontsize=8)
ax.set_xlabel("ms since the backward pass began (rank 0)")
ax.set_title(f"MobileNetV2-1.0, 2 ranks, batch {batch} per rank at {size} px, 1 MiB buckets")
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4)
plt.tight_layout(); plt.show()

# %% [markdown]
r"""
Each bucket's all-reduce starts while the backward pass is still computing the gradients of
earlier layers (grey: a bucket filling; orange: its all-reduce under way, until rank 0 sees it
done). An all-reduce can finish only when *every* rank has started it, so an orange bar also
holds the wait for the other rank: the lines above the table give each rank's backward pass,
timed from the barrier that starts the step together, and on a busy shared machine the two
drift apart. The bytes themselves are no obstacle here: the two ranks share one machine's
memory. Three things carry over to real networks. First, Open MPI moves a non-blocking
collective on only inside MPI calls (there is no progress thread by default): the `Testall`
each hook makes is what lets the bytes travel during the backward pass. Second, the first
layers' bucket fills last, at the very end of the pass, so its all-reduce can never be
hidden; with the default 25 MiB cap MobileNetV2's only bucket is that case. Third, the step
is as slow as the slowest rank: data parallelism wants equal workers.

## 19.4 The ring all-reduce and how far it scales

How long does an all-reduce of $N$ bytes take among $P$ workers? The algorithm of Horovod,
NCCL and Open MPI for large messages is the **ring** (Patarasuk and Yuan, 2009). The workers
sit in a ring; each cuts its $N$ bytes into $P$ chunks of $N/P$.

* **Reduce-scatter**, $P - 1$ steps: in step $s$ worker $r$ sends chunk $(r - s) \bmod P$ to
  its right neighbour and adds the chunk it receives from its left one to its own copy.
  After $P - 1$ steps worker $r$ holds the complete sum of chunk $(r + 1) \bmod P$.
* **All-gather**, $P - 1$ more steps: the summed chunks travel round the ring, each worker
  forwarding the one it just received, until every worker has all $P$ summed chunks.

Every step sends $N/P$ bytes on every link at once, so each worker sends, and receives,

$$
2 (P - 1) \cdot \frac{N}{P} = \frac{2 (P - 1)}{P}\, N \quad\text{bytes},
$$

and with links of $\beta$ bytes a second and a latency of $\alpha$ seconds a message the
all-reduce takes

$$
T_{\text{all-reduce}}(P) = 2 (P - 1)\, \alpha + \frac{2 (P - 1)}{P} \frac{N}{\beta} .
$$

The bandwidth term tends to $2N/\beta$ and never exceeds it, whatever $P$: a worker's bytes
do not grow with the number of workers. Only the $2(P - 1)$ latencies do. The cell runs the
algorithm chunk by chunk for 5 workers and counts what each sends:
"""

# %%
def ring_allreduce(buffers):
    """Sum the workers' equal-length vectors by reduce-scatter then all-gather along a ring.

    Returns every worker's result and the number of values each one sent."""
    p = len(buffers)
    chunks = [np.array_split(buf.astype(np.float64), p) for buf in buffers]
    sent = [0] * p
    for step in range(p - 1):                         # reduce-scatter
        outgoing = [chunks[r][(r - step) % p].copy() for r in range(p)]   # all send at once
        for r in range(p):
            c = (r - 1 - step) % p                    # the chunk arriving from the left
            chunks[r][c] += outgoing[(r - 1) % p]
            sent[(r - 1) % p] += outgoing[(r - 1) % p].size
    for step in range(p - 1):                         # all-gather: pass the finished sums on
        outgoing = [chunks[r][(r + 1 - step) % p].copy() for r in range(p)]
        for r in range(p):
            chunks[r][(r - step) % p] = outgoing[(r - 1) % p]
            sent[(r - 1) % p] += outgoing[(r - 1) % p].size
    return [np.concatenate(c) for c in chunks], sent


p, n_values = 5, 1000
workers = [np.random.default_rng(r).standard_normal(n_values) for r in range(p)]
results, sent = ring_allreduce(workers)
total = np.sum(workers, axis=0)
print(f"{p} workers, {n_values} values each")
print(f"max |result - sum| over the workers = {max(np.abs(r - total).max() for r in results):.1e}")
print(f"values each worker sent: {sent}; 2(P-1)/P N = {bytes_sent_per_worker(n_values, p):.0f}")
assert all(np.allclose(r, total, atol=1e-12) for r in results)
assert sent == [bytes_sent_per_worker(n_values, p)] * p

# %% [markdown]
r"""
**The step time.** A worker computes its forward pass ($T_f$) and backward pass ($T_b$) on its
$b$ images. If every all-reduce waited for the end of the backward pass, a step would take
$T_f + T_b + T_{\text{all-reduce}}$; with the buckets of 19.3 at best
$T_f + T_b + \max(0, T_{\text{all-reduce}} - T_b)$: only what does not fit behind the
backward pass shows (`tinymbv2.distributed.cost_model.step_seconds`). Two ways to scale:

* **weak scaling**: each worker keeps its $b$, so $P$ workers process $Pb$ images a step; the
  efficiency is $T_{\text{step}}(1) / T_{\text{step}}(P)$;
* **strong scaling**: the global batch $B$ is fixed and each worker gets $B/P$ images. Its
  compute shrinks with $P$; the all-reduce does not. Past some $P$ the step gets no faster
  (`best_workers`).

The model needs a worker's compute time at a given batch. The cell measures one worker here,
one core (one Numba thread), running MobileNetV2-1.0's training step (fused, as the trainer
runs it) at 224 px on batches of 1 to 32 images, taking turns, each time the fastest of five
runs (other processes share this machine). The cost model's `linear_compute` would fit each
time as a line $t_0 + b\,t_1$ in the batch, a fixed cost a step plus a cost an image; the
printed times per image show why that is too simple here: they fall while the fixed cost is
shared among more images, and can rise again at larger batches, when the activations no
longer fit in the processor's caches. The cell therefore gives the model the measured time
per image, interpolated between the measured batch sizes (and beyond the largest, as at the
largest: `interpolated_compute`). The times, and with them the strong-scaling curves below, move with how busy the
machine is.
"""

# %%
def measure_steps(batches, size, repeats):
    """One worker's forward (with the loss) and backward (with the SGD step) seconds at each
    batch size: the batch sizes take turns, and each time is the fastest of ``repeats``, the
    run least disturbed by other processes on the machine."""
    model = mobilenet_v2(1.0, 1000, seed=0)
    net = tinymbv2.fuse(model)
    net.train()
    opt = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    rng = np.random.default_rng(0)
    data = {bb: (rng.standard_normal((bb, 3, size, size)).astype(np.float32),
                 rng.integers(0, 1000, bb)) for bb in batches}
    forward, backward = {bb: [] for bb in batches}, {bb: [] for bb in batches}
    for k in range(1 + repeats):                      # the first round warms up
        for bb, (x, y) in data.items():
            t0 = time.perf_counter()
            loss = F.cross_entropy(net(Tensor(x)), Tensor(y))
            t1 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            if k > 0:
                forward[bb].append(t1 - t0)
                backward[bb].append(t2 - t1)
    return {bb: StepTime(min(forward[bb]), min(backward[bb])) for bb in batches}


size, batches, repeats = (64, (1, 2, 4, 8), 3) if TINYMBV2_FAST else (224, (1, 2, 4, 8, 16, 32), 5)
threads = numba.get_num_threads()
tinymbv2.use_kernels("numba")
tinymbv2.backend.keep_freed_memory()                  # as the trainer does: no page faults a step
numba.set_num_threads(1)                              # a worker is one core
try:
    measured = measure_steps(batches, size, repeats)
finally:
    numba.set_num_threads(threads)


compute_of = interpolated_compute(measured)   # b x the measured time per image
print(f"one worker (one thread), MobileNetV2-1.0 at {size} px, the fastest of {repeats}")
print(f"(load average {os.getloadavg()[0]:.1f}: other processes share this machine's cores)")
print(" batch  forward  backward + SGD step   per image")
for bb, t in measured.items():
    print(f"  {bb:4d} {t.forward * 1e3:7.1f} ms {t.backward * 1e3:10.1f} ms {t.compute / bb * 1e3:14.1f} ms")
line = linear_compute(measured)
t1 = line(2).compute - line(1).compute
print(f"a least-squares line would put the fixed cost a step at {(line(1).compute - t1) * 1e3:.1f} ms\n"
      f"and an image at {t1 * 1e3:.1f} ms")

# %% [markdown]
r"""
The links: 10 Gbit/s Ethernet and 100 Gbit/s (InfiniBand class). Their latencies, **25 µs
and 2 µs a message, are assumptions** (typical figures for TCP over Ethernet and for RDMA;
this machine has no network to measure). The gradient is MobileNetV2-1.0's 14 MB in float32.
The plot models weak scaling at 32 images per worker and strong scaling of a global batch
of 1024, to 512 workers, with the all-reduce behind the backward pass (solid) and after it
(dashed).
"""

# %%
links = {"10 Gbit/s": (10 * GBIT, 25e-6), "100 Gbit/s": (100 * GBIT, 2e-6)}
counts = [2 ** k for k in range(10)]                     # 1 .. 512 workers
WEAK_B, STRONG_B = 32, 1024
for name, (bw, lat) in links.items():
    print(f"one all-reduce of {grad_bytes / 1e6:.2f} MB on {name}: " + ", ".join(
        f"{ring_allreduce_seconds(grad_bytes, p, bw, lat) * 1e3:.1f} ms at P={p}" for p in (8, 512)))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
tables = {}
for ax, (strong, batch_size) in zip(axes, ((False, WEAK_B), (True, STRONG_B))):
    for (name, (bw, lat)), colour in zip(links.items(), ("#c44", "#48c")):
        for overlap, style in ((True, "-"), (False, "--")):
            rows = scaling(compute_of, grad_bytes, counts, bw, lat, batch_size, strong, overlap)
            tables[strong, name, overlap] = rows
            ax.plot([r["workers"] for r in rows], [r["efficiency"] for r in rows], style,
                    color=colour, marker="o", ms=3, lw=2.5 if colour == "#c44" else 1.5,
                    label=f"{name}, {'overlapped' if overlap else 'no overlap'}")
    ax.set_xscale("log", base=2); ax.set_xlabel("workers P")
    ax.set_xticks(counts[::2], [str(c) for c in counts[::2]])
    ax.set_title(f"strong scaling, global batch {batch_size}" if strong
                 else f"weak scaling, {batch_size} images per worker")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("efficiency (speed-up / P)"); axes[0].legend(fontsize=7)
plt.tight_layout(); plt.show()

for strong in (False, True):
    print("strong scaling, global batch 1024:" if strong else "weak scaling, 32 images a worker:")
    for name in links:
        rows = {r["workers"]: r for r in tables[strong, name, True]}
        for p in (8, 64, 512):
            print(f"  {name:10s} P={p:3d}: efficiency {rows[p]['efficiency']:6.1%}, "
                  f"all-reduce {rows[p]['allreduce_s'] * 1e3:3.0f} ms, step {rows[p]['step_s'] * 1e3:5.0f} ms")
best = {name: best_workers(compute_of, grad_bytes, bw, lat, STRONG_B) for name, (bw, lat) in links.items()}
for name, p in best.items():
    print(f"strong scaling of 1024 images on {name}: fastest at {p} workers")

# %% [markdown]
r"""
For workers as slow as one CPU core, communication hardly matters. A step of 32 images at
224 px takes more than a second (the step printed above), and the all-reduce of 14 MB 20 ms
among 8 workers at 10 Gbit/s, 48 ms among 512 (26 ms of which are the $2 \cdot 511$ assumed
latencies): hidden behind a backward pass of most of a second (the measured times above),
weak scaling stays at 100% to 512 workers, and
even with no overlap at all (dashed) it loses only a few percent. Strong scaling follows
the worker's own time per image at each share of the batch (the table of measured times), not
the network: it can rise above 100% where a smaller share costs less per image (activations
that fit in the processor's caches: the "superlinear" speed-up known from HPC), and it falls
where a share of one or two images pays the fixed cost of a step (Python, the optimizer's pass
over the parameters) nearly alone. It ends where the batch runs out (the printed
`best_workers`: one image a worker).

The model makes the other case easy to see: a worker 100 times faster, a GPU-class
accelerator (this is a hypothetical, the same measured times divided by 100; the links as
above):
"""

# %%
def faster(factor):
    return lambda bb: StepTime(compute_of(bb).forward / factor, compute_of(bb).backward / factor)


fig, ax = plt.subplots(figsize=(7, 3.6))
for (name, (bw, lat)), colour in zip(links.items(), ("#c44", "#48c")):
    for strong, style in ((False, "-"), (True, ":")):
        rows = scaling(faster(100), grad_bytes, counts, bw, lat, STRONG_B if strong else WEAK_B,
                       strong, True)
        ax.plot([r["workers"] for r in rows], [r["efficiency"] for r in rows], style, color=colour,
                marker="o", ms=3, label=f"{name}, {'strong 1024' if strong else 'weak 32/worker'}")
ax.set_xscale("log", base=2); ax.set_xlabel("workers P"); ax.set_ylabel("efficiency")
ax.set_xticks(counts[::2], [str(c) for c in counts[::2]])
ax.set_title("the measured worker 100x faster (hypothetical), overlapped")
ax.grid(alpha=0.3); ax.legend(fontsize=7)
plt.tight_layout(); plt.show()
for name, (bw, lat) in links.items():
    weak = {r["workers"]: r for r in scaling(faster(100), grad_bytes, counts, bw, lat, WEAK_B, False)}
    print(f"100x faster worker, {name}: weak efficiency at P=512 {weak[512]['efficiency']:.1%}; "
          f"strong scaling\n  of 1024 images fastest at P = "
          f"{best_workers(faster(100), grad_bytes, bw, lat, STRONG_B)}")

# %% [markdown]
r"""
Now the all-reduce is as long as the backward pass or longer and the 10 Gbit/s link shows:
weak scaling falls well below 100% (the printed efficiency at 512 workers), and strong scaling
stops at a few dozen workers on 10 Gbit/s and a few hundred on 100 Gbit/s (the printed
`best_workers`), because each worker's share of the batch shrinks until the all-reduce,
which does not shrink, dominates. The ways out are the ones large trainings use: faster links,
larger batches per worker, fewer bytes (gradients in 16 bits), and the overlap of 19.3.

## 19.5 How to run it

The training command runs on several ranks as it is. Started by `mpirun`, `tinymbv2 train`
finds the launcher's variables and becomes one rank of a data-parallel run: every BatchNorm
becomes a SyncBatchNorm, each rank takes its slice of every batch (`--batch-size` is the
global batch, so $P$ ranks take the steps one process takes, to rounding), the model trains
through `DistributedDataParallel`, and rank 0 alone prints and writes the run folder. A rank
that fails stops all of them with its error, and a resume must use as many ranks as the run
it resumes. Two ranks on the 8x8 digits:
"""

# %%
epochs = 1 if TINYMBV2_FAST else 3
start = time.perf_counter()
run_ranks(2, [CLI], "train", "--dataset", "digits", "--epochs", epochs, "--no-progress",
          "--out", work / "digits_2ranks")
print(f"({time.perf_counter() - start:.0f} s)")
net, config = load_trained(work / "digits_2ranks" / "model.npz")
print("the run folder:", ", ".join(sorted(p.name for p in (work / "digits_2ranks").iterdir())))
print("ranks recorded in the saved config:", config["ranks"], "(a resume must use as many)")
assert config["ranks"] == 2

# %% [markdown]
r"""
Only rank 0's lines appear, once. (The images a second are not a measure of anything here:
two ranks share this machine's two cores with other processes, and an 8x8 image gives a rank
almost nothing to compute between its all-reduces.) On a cluster the command is the same,
with a host file or the scheduler's launcher (`srun`, `mpiexec`) giving the ranks their
machines.

For a training loop of your own, the library's part is the three calls of 19.2's rank
function, `get_world`, a `DistributedSampler` for the shards and `DistributedDataParallel`
(after `convert_sync_batchnorm` when the shards are small):

```python
import numpy as np
from tinymbv2 import Tensor
from tinymbv2 import functional as F
from tinymbv2.distributed import (DistributedDataParallel, DistributedSampler,
                                  convert_sync_batchnorm, get_world)
from tinymbv2.models import mobilenet_v2
from tinymbv2.optim import SGD

world = get_world()
model = convert_sync_batchnorm(mobilenet_v2(0.35, 10, small_input=True, seed=0))
ddp = DistributedDataParallel(model)             # rank 0's weights, broadcast to all
optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
sampler = DistributedSampler(len(train_images), seed=0)   # this rank's shard
for epoch in range(epochs):
    sampler.set_epoch(epoch)                     # a new shuffle, the same on every rank
    idx = sampler.indices()
    for start in range(0, len(idx), batch_per_rank):
        take = idx[start:start + batch_per_rank]
        optimizer.zero_grad()
        loss = F.cross_entropy(ddp(Tensor(train_images[take])), Tensor(train_labels[take]))
        loss.backward()                          # averaged over the ranks on the way
        optimizer.step()
    if world.is_main:
        print(epoch, float(loss.data))
```

run as `mpirun -n 4 python train.py` with the `mpirun` of the environment (on a shared machine
add `--oversubscribe`, and give each rank one thread: `OMP_NUM_THREADS=1
NUMBA_NUM_THREADS=1`; `tinymbv2.distributed.mpirun_command` and `mpirun_env` build exactly
that, and the tests start their runs with them).

## Exercises

Each exercise gives a function to write and a check that runs it on cases you do not see: it
prints `correct` or `not yet:` with a hint naming the case that fails.

### Exercise 19.1

Write `global_stats(counts, sums, sumsqs)`: SyncBatchNorm's statistics of 19.2 from the
workers' pieces. `counts` has shape $(P,)$ (values per channel on each worker), `sums` and
`sumsqs` shape $(P, C)$. Return the mean and the biased variance of each channel over all
workers, two arrays of shape $(C,)$. The counts need not be equal.
"""

# %%
from tinymbv2.exercises import check_global_stats

def global_stats(counts, sums, sumsqs):
    """(P,), (P, C), (P, C) -> (mean, var), each (C,): the whole batch's per channel."""
    raise NotImplementedError("your code here")

check_global_stats(global_stats)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def global_stats(counts, sums, sumsqs):
    m = np.sum(counts)
    mean = np.sum(sums, axis=0) / m
    return mean, np.sum(sumsqs, axis=0) / m - mean ** 2
```

Sum first, divide once: the mean of the workers' means is right only for equal counts, and
no average of the workers' variances is right (it misses the spread of their means).

</details>

### Exercise 19.2

Write `ring_time(nbytes, workers, bandwidth, latency)`: the seconds of one ring all-reduce
(19.4) of `nbytes` bytes among `workers` workers, links of `bandwidth` bytes a second and
`latency` seconds a message.
"""

# %%
from tinymbv2.exercises import check_ring_time

def ring_time(nbytes, workers, bandwidth, latency):
    """-> seconds."""
    raise NotImplementedError("your code here")

check_ring_time(ring_time)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def ring_time(nbytes, workers, bandwidth, latency):
    steps = 2 * (workers - 1)              # reduce-scatter, then all-gather
    return steps * latency + steps / workers * nbytes / bandwidth
```

One worker sends nothing: 0 seconds.

</details>

### Exercise 19.3

Write `make_buckets(nbytes, cap)`: DistributedDataParallel's buckets of 19.3 for parameters
whose gradients take `nbytes[i]` bytes (in parameter order), as a list of lists of parameter
indices, the first bucket first. Go through the parameters last to first; a parameter that
would take the open bucket over `cap` bytes starts a new one (a parameter larger than `cap`
is a bucket by itself).
"""

# %%
from tinymbv2.exercises import check_buckets

def make_buckets(nbytes, cap):
    """list of ints, int -> list of lists of indices, e.g. [[4, 3], [2], [1, 0]]."""
    raise NotImplementedError("your code here")

check_buckets(make_buckets)

# %% [markdown]
r"""
<details><summary>Solution</summary>

```python
def make_buckets(nbytes, cap):
    buckets, size = [], 0
    for i in reversed(range(len(nbytes))):
        if not buckets or size + nbytes[i] > cap:
            buckets.append([])                 # close the bucket before it overflows
            size = 0
        buckets[-1].append(i)
        size += nbytes[i]
    return buckets
```

Reverse order, because the backward pass finishes the last parameters' gradients first.

</details>
"""
