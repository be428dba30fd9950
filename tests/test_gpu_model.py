"""The GPU path (issue 7), one level up: ops, the network and optimizers on "cuda".

* every differentiable op MobileNetV2 training uses (and a segmentation's: interpolate,
  per-pixel cross-entropy), forward and backward with a random upstream gradient, on CuPy tensors against PyTorch on the CPU (float64);
* the whole network (width 0.35, 10 classes, 32 px, batch 2) on the GPU against
  the same network on the CPU and against PyTorch (float64 to 1e-9; float32
  logits to 1e-4, gradients to 1e-3);
* SGD, RMSprop(TF), Adam(W): 10 steps on GPU arrays equal the CPU's;
* device plumbing: Tensor.to/cpu/cuda, model.to("cuda") with a NumPy state_dict,
  clear errors when devices are mixed, and a training step that stays on the GPU.

Skipped with "CuPy with a CUDA GPU is not available" where there is no GPU.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pytest
from test_gpu import GPU, needs_gpu, rel

import tinymbv2
from tinymbv2 import Tensor, optim
from tinymbv2 import functional as F
from tinymbv2.models import mobilenet_v2
from tinymbv2.nn import BatchNorm2d

if GPU:
    import cupy as cp
pytestmark = needs_gpu


def _torch():
    torch = pytest.importorskip("torch")
    torch.backends.cudnn.allow_tf32 = False  # (references run on the CPU; no TF32 anywhere)
    return torch


def compare_on_cuda(fn_ours, fn_torch, arrays, tol=1e-10, seed=12345):
    """Ours on CuPy tensors vs torch on the CPU: value and every input gradient.

    The upstream gradient has its own seed: drawn like an input, BN's would be an
    affine function of x and its input gradient would cancel to ~0.
    """
    torch = _torch()
    ours = [Tensor(cp.asarray(a), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, ty = fn_ours(*ours), fn_torch(*theirs)
    assert y.device == "cuda" and isinstance(y.data, cp.ndarray)
    assert rel(y.data.get(), ty.detach().numpy()) <= tol, "forward"
    g = np.random.default_rng(seed).standard_normal(tuple(ty.shape))
    y.backward(cp.asarray(g))
    tgrads = torch.autograd.grad(ty, theirs, torch.from_numpy(g), allow_unused=True)
    for i, (mine, ref) in enumerate(zip(ours, tgrads)):
        assert isinstance(mine.grad, cp.ndarray), f"grad {i} left the GPU"
        want = np.zeros(arrays[i].shape) if ref is None else ref.numpy()
        assert rel(mine.grad.get(), want) <= tol, f"grad of input {i}"


def _r(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


CONV_CASES = {  # (x shape, w shape, stride, padding, groups): the four kernels conv2d picks
    "pointwise": ((2, 6, 5, 7), (4, 6, 1, 1), 1, 0, 1),
    "depthwise": ((2, 6, 9, 8), (6, 1, 3, 3), 2, 1, 6),
    "dense": ((2, 3, 9, 8), (5, 3, 3, 3), 2, 1, 1),
    "grouped": ((2, 6, 7, 7), (4, 3, 3, 3), 1, 1, 2),
}


@pytest.mark.parametrize("path", list(CONV_CASES))
def test_conv2d_all_paths_on_cuda(path):
    xs, ws, s, p, groups = CONV_CASES[path]
    torch = _torch()
    compare_on_cuda(lambda x, w, b: F.conv2d(x, w, b, s, p, groups=groups),
                    lambda x, w, b: torch.nn.functional.conv2d(x, w, b, s, p, 1, groups),
                    [_r(*xs), _r(*ws, seed=1), _r(ws[0], seed=2)])


DILATED_CASES = {  # (x shape, w shape, stride, padding, dilation, groups): atrous convolution
    "depthwise-d2": ((2, 6, 9, 8), (6, 1, 3, 3), 1, 2, 2, 6),
    "depthwise-d6-s2": ((2, 4, 17, 15), (4, 1, 3, 3), 2, 6, 6, 4),
    "dense-d3": ((2, 3, 11, 10), (5, 3, 3, 3), 1, 3, 3, 1),
    "dense-d23-s2": ((1, 3, 12, 13), (4, 3, 3, 2), 2, (1, 2), (2, 3), 1),
    "grouped-d2": ((2, 6, 9, 9), (4, 3, 3, 3), 1, 2, 2, 2),
}


@pytest.mark.parametrize("case", list(DILATED_CASES))
def test_dilated_conv2d_on_cuda(case):
    """The CUDA kernels with the taps spread by dilation, against torch on the CPU."""
    xs, ws, s, p, d, groups = DILATED_CASES[case]
    torch = _torch()
    compare_on_cuda(lambda x, w, b: F.conv2d(x, w, b, s, p, d, groups),
                    lambda x, w, b: torch.nn.functional.conv2d(x, w, b, s, p, d, groups),
                    [_r(*xs), _r(*ws, seed=1), _r(ws[0], seed=2)])


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_on_cuda(training):
    torch = _torch()
    x, w, b = _r(3, 4, 5, 6) * 2 + 1, _r(4, seed=1), _r(4, seed=2)
    rm, rv = _r(4, seed=3), np.random.default_rng(4).uniform(0.5, 2, 4)
    ours_rm, ours_rv = cp.asarray(rm), cp.asarray(rv)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    compare_on_cuda(
        lambda x, w, b: F.batch_norm(x, ours_rm, ours_rv, w, b, training, 0.1, 1e-5),
        lambda x, w, b: torch.nn.functional.batch_norm(x, trm, trv, w, b, training, 0.1, 1e-5),
        [x, w, b])
    assert rel(ours_rm.get(), trm.numpy()) <= 1e-12 and rel(ours_rv.get(), trv.numpy()) <= 1e-12


@pytest.mark.parametrize("op", ["relu6", "linear", "pool1", "pool23", "add", "mul", "sum",
                                "log_softmax", "softmax", "cross_entropy", "pixel_cross_entropy",
                                "bilinear", "bilinear_corners", "bilinear_scale", "nearest",
                                "nearest_scale"])
def test_layer_ops_and_losses_on_cuda(op):
    torch = _torch()
    tf = torch.nn.functional
    target = np.array([2, 0, 4, 4, 1])
    t_ours, t_torch = cp.asarray(target), torch.from_numpy(target)
    pixels = np.random.default_rng(3).integers(0, 4, (2, 5, 6))
    pixels[0, 1, :3] = 255
    p_ours, p_torch, w = cp.asarray(pixels), torch.from_numpy(pixels), _r(4, seed=4) ** 2 + 0.5
    w_ours, w_torch = cp.asarray(w), torch.from_numpy(w)
    cases = {
        "pixel_cross_entropy": (
            lambda z: F.cross_entropy(z, p_ours, weight=w_ours, ignore_index=255, label_smoothing=0.1),
            lambda z: tf.cross_entropy(z, p_torch, weight=w_torch, ignore_index=255, label_smoothing=0.1),
            [_r(2, 4, 5, 6) * 3]),
        "bilinear": (lambda x: F.interpolate(x, size=(13, 4)),
                     lambda x: tf.interpolate(x, size=(13, 4), mode="bilinear"), [_r(2, 3, 5, 7)]),
        "bilinear_corners": (lambda x: F.interpolate(x, size=(13, 4), align_corners=True),
                             lambda x: tf.interpolate(x, size=(13, 4), mode="bilinear", align_corners=True),
                             [_r(2, 3, 5, 7)]),
        "bilinear_scale": (lambda x: F.interpolate(x, scale_factor=(2.7, 0.6)),
                           lambda x: tf.interpolate(x, scale_factor=(2.7, 0.6), mode="bilinear"),
                           [_r(2, 3, 5, 7)]),
        "nearest": (lambda x: F.interpolate(x, size=(13, 4), mode="nearest"),
                    lambda x: tf.interpolate(x, size=(13, 4), mode="nearest"), [_r(2, 3, 5, 7)]),
        "nearest_scale": (lambda x: F.interpolate(x, scale_factor=1 / 3, mode="nearest"),
                          lambda x: tf.interpolate(x, scale_factor=1 / 3, mode="nearest"), [_r(1, 2, 9, 12)]),
        "relu6": (F.relu6, tf.relu6, [_r(3, 4, 5) * 5]),
        "linear": (F.linear, tf.linear, [_r(5, 7), _r(3, 7, seed=1), _r(3, seed=2)]),
        "pool1": (lambda x: F.adaptive_avg_pool2d(x, 1), lambda x: tf.adaptive_avg_pool2d(x, 1),
                  [_r(2, 3, 5, 7)]),
        "pool23": (lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
                   lambda x: tf.adaptive_avg_pool2d(x, (2, 3)), [_r(2, 3, 5, 7)]),
        "add": (lambda a, b: a + b, lambda a, b: a + b, [_r(2, 3, 4), _r(3, 1, seed=1)]),
        "mul": (lambda a, b: a * b, lambda a, b: a * b, [_r(2, 3, 4), _r(4, seed=1)]),
        "sum": (lambda a: (a * 2.0).sum(axis=(0, 2)), lambda a: (a * 2.0).sum((0, 2)),
                [_r(2, 3, 4)]),
        "log_softmax": (F.log_softmax, lambda z: tf.log_softmax(z, -1), [_r(5, 6) * 3]),
        "softmax": (F.softmax, lambda z: tf.softmax(z, -1), [_r(5, 6) * 3]),
        "cross_entropy": (lambda z: F.cross_entropy(z, t_ours, label_smoothing=0.1),
                          lambda z: tf.cross_entropy(z, t_torch, label_smoothing=0.1),
                          [_r(5, 6) * 3]),
    }
    compare_on_cuda(*cases[op])


def test_dropout_on_cuda_draws_the_cpu_mask():
    """The mask comes from the package's NumPy generator (one stream for both devices)
    and is copied to the GPU; value and gradient use the same mask."""
    x, g = _r(20, 50), _r(20, 50, seed=1)
    out = []
    for to in (np.asarray, cp.asarray):
        t = Tensor(to(x), requires_grad=True)
        y = F.dropout(t, p=0.3, training=True, generator=np.random.default_rng(7))
        y.backward(to(g))
        assert type(y.data) is type(t.data) and type(t.grad) is type(t.data)
        out.append((Tensor(y.data).numpy(), Tensor(t.grad).numpy()))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


def test_other_losses_on_cuda_equal_the_cpu():
    z, target = _r(6, 4) * 3, np.array([0, 3, 3, 1, 2, 0])
    losses = {
        "focal": lambda z, t: F.focal_loss(z, t, gamma=2.0, alpha=[0.5, 1.0, 1.5, 2.0]),
        "dice": lambda z, t: F.dice_loss(z, t),
        "ce_dice": lambda z, t: F.ce_dice_loss(z, t, weight=[0.5, 1.0, 1.5, 2.0]),
        "l2": lambda z, t: F.l2_penalty([z], 0.1),
    }
    for name, fn in losses.items():
        results = []
        for to in (np.asarray, cp.asarray):
            zt = Tensor(to(z), requires_grad=True)
            loss = fn(zt, to(target))
            loss.backward()
            results.append((np.asarray(Tensor(loss.data).numpy()), Tensor(zt.grad).numpy()))
        (l_cpu, g_cpu), (l_gpu, g_gpu) = results
        assert rel(l_gpu, l_cpu) <= 1e-12 and rel(g_gpu, g_cpu) <= 1e-12, name


# ------------------------------------------------------------- the network
def _torch_port():
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.torch_port import torch_port

    return torch_port


def _model(dtype, seed=0):
    """Width 0.35, 10 classes, 32 px maps down to 4x4; BN parameters randomised; dropout off."""
    model = mobilenet_v2(0.35, 10, small_input=True, seed=seed).to(dtype).train()
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, BatchNorm2d):
            c = m.num_features
            m.weight.data[...] = 1 + 0.2 * rng.standard_normal(c)
            m.bias.data[...] = 0.1 * rng.standard_normal(c)
    model.classifier[0].eval()  # the masks could not match; everything else trains
    return model


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_network_on_gpu_matches_cpu_and_torch(dtype):
    """Train-mode logits, parameter gradients and BN running statistics.

    float32 gradients are compared with the float64 answer for the same float32
    weights and input (and with the CPU's float32), not with PyTorch's float32: through
    train-mode BN on 2 images each float32 implementation is off by its own rounding,
    and PyTorch's CPU float32 is off by 2e-2 on this very network (ours by 4e-5).
    """
    torch = _torch()
    tol_y, tol_g = (1e-9, 1e-9) if dtype == np.float64 else (1e-4, 1e-3)
    gpu, cpu = _model(dtype), _model(dtype)
    port = _torch_port()(_model(dtype).to(np.float64))  # float64 even for float32 weights
    gpu.to("cuda")
    x, g = _r(2, 3, 32, 32, seed=1).astype(dtype), _r(2, 10, seed=2).astype(dtype)
    y_gpu = gpu(Tensor(cp.asarray(x)))
    y_gpu.backward(cp.asarray(g))
    with tinymbv2.use_kernels("reference"):  # no Numba compile needed on the GPU machine
        y_cpu = cpu(Tensor(x))
        y_cpu.backward(g)
    ty = port(torch.from_numpy(x.astype(np.float64)))
    ty.backward(torch.from_numpy(g.astype(np.float64)))
    assert y_gpu.data.dtype == dtype
    assert rel(y_gpu.data.get(), y_cpu.data) <= tol_y
    assert rel(y_gpu.data.get(), ty.detach().numpy()) <= tol_y
    if dtype == np.float32:
        port32 = _torch_port()(_model(dtype))
        assert rel(y_gpu.data.get(), port32(torch.from_numpy(x)).detach().numpy()) <= tol_y

    theirs, on_cpu = dict(port.named_parameters()), dict(cpu.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in port.parameters())
    zero = 1e-12 if dtype == np.float64 else 1e-5
    for name, p in gpu.named_parameters():
        assert isinstance(p.grad, cp.ndarray) and p.grad.dtype == dtype, name
        mine, ref = p.grad.get(), theirs[name].grad.numpy()
        if np.abs(ref).max() <= 1e-12 * scale:  # exactly zero in exact arithmetic: the
            assert np.abs(mine).max() <= zero * scale, name  # projection BN biases
            continue
        assert rel(mine, ref) <= tol_g, f"{name} vs the float64 answer"
        assert rel(mine, on_cpu[name].grad, 1e-3 * scale) <= tol_g, f"{name} vs the CPU"
    state, tstate = gpu.state_dict(), port.state_dict()
    for k, v in state.items():  # running statistics moved like PyTorch's
        if "running" in k:
            assert rel(v, tstate[k].numpy()) <= tol_y, k


@pytest.mark.parametrize("cls, kwargs", [
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True, weight_decay=1e-3)),
    (optim.RMSpropTF, dict(lr=0.01, momentum=0.9, eps=1e-3)),
    (optim.Adam, dict(lr=0.01, weight_decay=1e-3)),
    (optim.AdamW, dict(lr=0.01)),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_optimizers_on_gpu_equal_the_cpu(cls, kwargs):
    shapes = [(3, 4), (5,), (2, 3, 2)]
    init = [_r(*s, seed=i) for i, s in enumerate(shapes)]
    grads = [[_r(*s, seed=100 * t + i) for i, s in enumerate(shapes)] for t in range(10)]

    def run(to):
        params = [Tensor(to(a.copy())) for a in init]
        opt = cls(params, **kwargs)
        for gs in grads:
            for p, gr in zip(params, gs):
                p.grad = to(gr.copy())
            opt.step()
        return params, opt

    (cpu, _), (gpu, opt) = run(np.asarray), run(cp.asarray)
    for a, b in zip(gpu, cpu):
        assert isinstance(a.data, cp.ndarray) and rel(a.data.get(), b.data) <= 1e-10
    for s in opt.state.values():
        assert all(isinstance(v, cp.ndarray) for v in s.values() if hasattr(v, "shape"))


# --------------------------------------------------------- device plumbing
def test_tensor_to_cpu_cuda_round_trip():
    a = _r(2, 3).astype(np.float32)
    t = Tensor(a, requires_grad=True)
    g = t.to("cuda")
    assert g.device == "cuda" and isinstance(g.data, cp.ndarray) and g.is_leaf
    assert g.requires_grad and g.dtype == np.float32 and g.to("cuda") is g
    back = g.cpu()
    assert back.device == "cpu" and back.requires_grad and np.array_equal(back.data, a)
    assert t.cuda().device == "cuda" and Tensor(a).cuda().requires_grad is False
    with pytest.raises(RuntimeError, match="non-leaf"):
        (t * 2.0).to("cuda")
    with pytest.raises(ValueError, match="expected device 'cpu' or 'cuda'"):
        t.to("tpu")


def test_model_to_cuda_keeps_a_numpy_state_dict():
    model = mobilenet_v2(0.35, 10, seed=0)
    before = model.state_dict()
    model.to("cuda")
    assert all(isinstance(t.data, cp.ndarray) for t in list(model.parameters()) + list(model.buffers()))
    after = model.state_dict()
    assert list(after) == list(before)
    for k, v in after.items():
        assert isinstance(v, np.ndarray) and v.dtype == before[k].dtype, k
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    model.load_state_dict(before)  # NumPy values land on the model's device
    assert all(isinstance(p.data, cp.ndarray) for p in model.parameters())
    model.to("cpu")
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())


def test_mixing_devices_raises_a_clear_error():
    x_gpu, x_cpu = Tensor(cp.ones((1, 3, 8, 8), cp.float32)), Tensor(np.ones((1, 3, 8, 8), np.float32))
    w = Tensor(np.ones((4, 3, 3, 3), np.float32))
    one_device = r"expected all inputs on one device.*\.to\('cuda'\)"
    with pytest.raises(TypeError, match="conv2d: " + one_device):
        F.conv2d(x_gpu, w)
    with pytest.raises(TypeError, match="add: " + one_device):
        x_gpu + x_cpu
    with pytest.raises(TypeError, match="mul: " + one_device):
        x_gpu * np.ones((1, 3, 8, 8), np.float32)
    with pytest.raises(TypeError, match="linear: " + one_device):
        F.linear(Tensor(cp.ones((2, 3), cp.float32)), Tensor(np.ones((4, 3), np.float32)))
    with pytest.raises(TypeError, match="batch_norm: " + one_device):
        F.batch_norm(x_gpu, np.zeros(3, np.float32), np.ones(3, np.float32), training=True)
    model = mobilenet_v2(0.35, 10, seed=0).to("cuda")
    with pytest.raises(TypeError, match="conv2d: " + one_device):
        model(x_cpu)
    assert (x_gpu * 2.0).device == "cuda"  # numbers go anywhere


def test_a_training_step_stays_on_the_gpu():
    """Forward, loss, backward and SGD step: every array stays a CuPy array and,
    where CuPy can still detect it, nothing synchronises with the host until the
    loss is read."""
    cupyx = pytest.importorskip("cupyx")
    model = mobilenet_v2(0.35, 10, small_input=True, seed=0, dropout=0.0).to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=4e-5)
    x = Tensor(cp.asarray(_r(4, 3, 32, 32).astype(np.float32)))
    weights = cp.asarray(_r(4, 10, seed=1).astype(np.float32))

    def step():
        loss = (model(x) * weights).sum()  # (cross_entropy checks its targets on the host)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    step()  # compiles the kernels and fills the memory pool
    no_sync = getattr(cupyx, "allow_synchronize", None)
    with no_sync(False) if no_sync is not None else contextlib.nullcontext():
        loss = step()
    assert np.isfinite(loss.item())
    arrays = [t.data for t in list(model.parameters()) + list(model.buffers())]
    arrays += [v for s in opt.state.values() for v in s.values() if hasattr(v, "shape")]
    assert all(isinstance(a, cp.ndarray) for a in arrays)


def test_trainer_moves_numpy_batches_to_a_gpu_model():
    """train_one_epoch / evaluate feed a model moved with .to("cuda") from NumPy batches:
    each batch goes to the GPU, the parameters stay CuPy arrays, and one epoch gives
    the same loss as on the CPU (the same kernels' maths)."""
    from tinymbv2.evaluation import evaluate
    from tinymbv2.train import train_one_epoch

    images = _r(8, 3, 32, 32).astype(np.float32)
    labels = np.arange(8) % 10
    loader = [(images[:4], labels[:4]), (images[4:], labels[4:])]
    results = []
    for device in ("cpu", "cuda"):
        model = mobilenet_v2(0.35, 10, small_input=True, seed=0, dropout=0.0).to(device)
        opt = optim.SGD(model.parameters(), lr=0.05)
        stats = train_one_epoch(model, loader, opt, progress=False)
        assert all(p.device == device for p in model.parameters())
        results.append((stats["loss"], evaluate(model, images, labels)["loss"]))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4)


@pytest.mark.parametrize("head,output_stride", [("aspp", 16), ("lraspp", 8)])
def test_segmentation_model_on_gpu_matches_cpu(head, output_stride):
    """Mobile DeepLabv3 (dilated depthwise and dense convs, ASPP's pooling spread back, the
    LR-ASPP gate, the final resize) on the GPU against the CPU's reference kernels, float64,
    train mode (dropout off: its masks are drawn per device): logits, every parameter
    gradient and the running statistics to 1e-9."""
    from tinymbv2.models import deeplabv3_mobilenet_v2

    def build():
        model = deeplabv3_mobilenet_v2(3, output_stride, head, width_mult=0.35, seed=0).double()
        for m in model.modules():
            if type(m).__name__ == "Dropout":
                m.eval()
        return model

    gpu, cpu = build().to("cuda"), build()
    x, g = _r(2, 3, 40, 36, seed=1), _r(2, 3, 40, 36, seed=2)
    y_gpu = gpu(Tensor(cp.asarray(x)))
    y_gpu.backward(cp.asarray(g))
    with tinymbv2.use_kernels("reference"):
        y_cpu = cpu(Tensor(x))
        y_cpu.backward(g)
    assert y_gpu.shape == (2, 3, 40, 36) and isinstance(y_gpu.data, cp.ndarray)
    assert rel(y_gpu.data.get(), y_cpu.data) <= 1e-9
    on_cpu = dict(cpu.named_parameters())
    scale = max(float(np.abs(p.grad).max()) for p in cpu.parameters())
    for name, p in gpu.named_parameters():
        assert isinstance(p.grad, cp.ndarray), name
        assert rel(p.grad.get(), on_cpu[name].grad, 1e-9 * scale) <= 1e-9, name
    cpu_state = cpu.state_dict()
    for k, v in gpu.state_dict().items():
        if "running" in k:
            assert rel(v, cpu_state[k]) <= 1e-9, k


def test_a_frozen_model_on_the_gpu_gives_the_fused_models_logits():
    """tinymbv2.freeze on a GPU model: its copies stay on the GPU, the CuPy set runs each
    step, and the logits are the fused GPU model's (float64, eval mode)."""
    model = _model(np.float64).eval()
    model.to("cuda")
    frozen = tinymbv2.freeze(model)
    x = cp.asarray(_r(2, 3, 32, 32, seed=3))
    with tinymbv2.no_grad():
        fused = tinymbv2.fuse(model)(Tensor(x)).data
    logits = frozen(x)
    assert isinstance(logits, cp.ndarray) and logits.shape == (2, 10)
    assert rel(logits.get(), fused.get()) <= 1e-12
    with pytest.raises(ValueError, match="expected images as a cupy array"):
        frozen(_r(2, 3, 32, 32, seed=3))
