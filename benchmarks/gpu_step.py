"""One training step of MobileNetV2 on the GPU: tinymbv2 (CuPy kernels) vs PyTorch eager.

    PYTHONPATH=. python -m benchmarks.gpu_step [--batch 64] [--resolution 224] [--width 1.0]
                                               [--warmup 3] [--steps 10]

A step is forward, cross-entropy, backward and SGD with momentum (lr 0.01, momentum 0.9,
weight decay 4e-5), zero_grad included, float32, 1000 classes. Both start from the same
weights (tinymbv2's, copied into a torchvision model, or into a plain torch port of it
when torchvision is missing) on the same GPU. Each step is timed with CUDA events
recorded on the stream around it, so the host's Python time shows up as GPU idle time;
the first ``--warmup`` steps (kernel compiles, cuDNN autotuning) are dropped and the
median of ``--steps`` is reported.

The first step runs with dropout off on both sides and must give the same loss to a
relative 1e-4 (TF32 is switched off in PyTorch, so both compute in true float32);
the exit status is 1 when it does not. The table printed last holds the median ms,
the ratio to PyTorch's time (lower is better) and images per second.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

import tinymbv2
from tinymbv2 import Tensor, optim
from tinymbv2 import functional as F
from tinymbv2.models import mobilenet_v2, to_torch_state_dict


def time_steps(step, make_events, warmup: int, steps: int) -> list[float]:
    """Milliseconds of each timed step (after ``warmup`` untimed ones), from CUDA events."""
    times = []
    for i in range(warmup + steps):
        start, end = make_events()
        start.record()
        step()
        end.record()
        end.synchronize()
        if i >= warmup:
            times.append(start_end_ms(start, end))
    return times


def start_end_ms(start, end) -> float:
    if hasattr(start, "elapsed_time"):  # torch.cuda.Event
        return float(start.elapsed_time(end))
    import cupy as cp

    return float(cp.cuda.get_elapsed_time(start, end))


def ours(x, labels, width, warmup, steps):
    """(first-step loss, step times in ms) of tinymbv2 on the GPU; also returns the initial weights."""
    import cupy as cp

    model = mobilenet_v2(width_mult=width, num_classes=1000, seed=0)
    state = to_torch_state_dict(model)  # the weights both sides start from
    model.to("cuda").train()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    xg, yg = Tensor(cp.asarray(x)), cp.asarray(labels)
    net = tinymbv2.fuse(model)  # as the trainer runs it

    def step():
        loss = F.cross_entropy(net(xg), yg)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    model.classifier[0].eval()
    first = float(step().item())
    model.classifier[0].train()
    times = time_steps(step, lambda: (cp.cuda.Event(), cp.cuda.Event()), warmup, steps)
    model = net = opt = xg = None  # frees the GPU arrays (the cells step() closes over)
    cp.get_default_memory_pool().free_all_blocks()
    return first, times, state


def torch_model(state, width):
    """torchvision's mobilenet_v2, or the torch port of tinymbv2's when torchvision is missing."""
    try:
        import torchvision

        model, kind = torchvision.models.mobilenet_v2(width_mult=width, num_classes=1000), "torchvision"
    except ImportError:
        from .torch_port import torch_port

        model, kind = torch_port(mobilenet_v2(width_mult=width, num_classes=1000, seed=0)), "torch port"
    model.load_state_dict(state)
    return model, kind


def theirs(x, labels, state, width, warmup, steps):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    model, kind = torch_model(state, width)
    model = model.cuda().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(labels).cuda()

    def step():
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    model.classifier[0].eval()
    first = float(step().item())
    model.classifier[0].train()

    def events():
        return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    return first, time_steps(step, events, warmup, steps), kind


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args(argv)
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - no CuPy, no driver or no device
        print(f"gpu_step: needs CuPy with a CUDA GPU ({type(exc).__name__}: {exc})")
        return 2
    props = cp.cuda.runtime.getDeviceProperties(0)
    print(f"GPU {props['name'].decode()}, CuPy {cp.__version__}, "
          f"CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, tinymbv2 {tinymbv2.__version__}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.batch, 3, a.resolution, a.resolution)).astype(np.float32)
    labels = rng.integers(0, 1000, a.batch).astype(np.int64)
    print(f"MobileNetV2-{a.width} at {a.resolution} px, batch {a.batch}, float32: "
          f"{a.warmup} warm-up steps, median of {a.steps}")

    loss_ours, t_ours, state = ours(x, labels, a.width, a.warmup, a.steps)
    rows = [("tinymbv2-cupy", statistics.median(t_ours))]
    status, ref_ms = 0, None
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("torch has no CUDA device here")
    except ImportError as exc:
        print(f"PyTorch column skipped: {exc}")
    else:
        loss_torch, t_torch, kind = theirs(x, labels, state, a.width, a.warmup, a.steps)
        ref_ms = statistics.median(t_torch)
        rows.insert(0, (f"PyTorch eager ({kind})", ref_ms))
        err = abs(loss_ours - loss_torch) / abs(loss_torch)
        ok = err <= 1e-4
        status = 0 if ok else 1
        print(f"first-step loss: tinymbv2 {loss_ours:.7f}, PyTorch {loss_torch:.7f}, "
              f"relative difference {err:.2e} ({'OK' if ok else 'FAIL'}: must be <= 1e-4)")
    print()
    print(f"{'':<28}{'median ms':>11}{'x PyTorch':>11}{'images/s':>10}")
    for name, ms in rows:
        ratio = f"{ms / ref_ms:.2f}" if ref_ms else "-"
        print(f"{name:<28}{ms:>11.1f}{ratio:>11}{a.batch / ms * 1000:>10.0f}")
    return status


if __name__ == "__main__":
    sys.exit(main())
