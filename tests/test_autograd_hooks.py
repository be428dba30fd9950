"""The engine's hooks for data parallelism: post-accumulate-grad hooks on leaves, callbacks
queued for the end of a backward pass, and the walk order that makes a layer's parameters
ready right after its op's backward (checked against PyTorch's hook of the same name)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tinymbv2 import Tensor, autograd
from tinymbv2 import functional as F
from tinymbv2.models import mobilenet_v2


def test_the_hook_sees_the_complete_gradient_once_per_backward_like_torch():
    rng = np.random.default_rng(0)
    a_np, w_np = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    seen = {}

    def record(name):  # ours hold an ndarray in .grad, torch a tensor
        def hook(t):
            grad = t.grad.detach().numpy() if isinstance(t.grad, torch.Tensor) else t.grad
            seen.setdefault(name, []).append(grad.copy())
        return hook

    w = Tensor(w_np, requires_grad=True)
    w.register_post_accumulate_grad_hook(record("ours"))
    a = Tensor(a_np)
    for _ in range(2):  # w used twice: one call per pass, with both uses summed
        ((a @ w) * (a @ w)).sum().backward()
    tw = torch.tensor(w_np, requires_grad=True)
    tw.register_post_accumulate_grad_hook(record("torch"))
    ta = torch.tensor(a_np)
    for _ in range(2):
        ((ta @ tw) * (ta @ tw)).sum().backward()
    assert len(seen["ours"]) == len(seen["torch"]) == 2
    for ours, theirs in zip(seen["ours"], seen["torch"]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert not np.allclose(seen["ours"][0], seen["ours"][1])  # the second pass accumulated


def test_a_removed_hook_is_not_called_and_non_leaves_are_refused():
    w = Tensor(np.ones(3), requires_grad=True)
    calls = []
    handle = w.register_post_accumulate_grad_hook(calls.append)
    (w * 2).sum().backward()
    handle.remove()
    (w * 2).sum().backward()
    assert calls == [w]
    with pytest.raises(RuntimeError, match="expected a leaf tensor that requires grad"):
        (w * 2).register_post_accumulate_grad_hook(calls.append)
    with pytest.raises(RuntimeError, match="requires_grad=False"):
        Tensor(np.ones(3)).register_post_accumulate_grad_hook(calls.append)
    with pytest.raises(TypeError, match="expected a callable, got int"):
        w.register_post_accumulate_grad_hook(3)


def test_queued_callbacks_run_after_every_gradient_is_in_and_only_inside_backward():
    w1 = Tensor(np.ones(2), requires_grad=True)
    w2 = Tensor(np.full(2, 3.0), requires_grad=True)
    log = []

    def at_end():
        log.append(("end", w1.grad.copy(), w2.grad.copy()))

    def first_hook(t):
        log.append("hook")
        autograd.queue_callback(at_end)

    w1.register_post_accumulate_grad_hook(first_hook)
    (w1 * w2).sum().backward()
    assert log[0] == "hook" and log[1][0] == "end" and len(log) == 2
    np.testing.assert_array_equal(log[1][1], [3.0, 3.0])
    np.testing.assert_array_equal(log[1][2], [1.0, 1.0])
    with pytest.raises(RuntimeError, match="no backward pass is running"):
        autograd.queue_callback(at_end)


def test_a_failing_callback_propagates_and_leaves_the_engine_usable():
    w = Tensor(np.ones(2), requires_grad=True)

    def fail():
        raise ValueError("boom")

    handle = w.register_post_accumulate_grad_hook(lambda t: autograd.queue_callback(fail))
    with pytest.raises(ValueError, match="boom"):
        (w * 2).sum().backward()
    handle.remove()
    (w * 2).sum().backward()  # no callback left over from the failed pass
    np.testing.assert_array_equal(w.grad, [4.0, 4.0])


def test_parameters_become_ready_in_reverse_order_during_the_backward_pass():
    """MobileNetV2's gradients arrive last layer first, each right after its op (as in
    PyTorch): the first parameter's hook fires after most of the backward, the last one's
    after only a few ops."""
    model = mobilenet_v2(width_mult=0.35, num_classes=10, small_input=True, seed=0).double()
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 16, 16)))
    params = list(model.parameters())
    events = []
    for i, p in enumerate(params):
        p.register_post_accumulate_grad_hook(lambda t, i=i: events.append(i))
    loss = F.cross_entropy(model(x), Tensor(np.array([1, 2])))
    walk = autograd._topological_order(loss)
    position = {id(t): k for k, t in enumerate(walk)}
    ops_before = {i: sum(t._node is not None for t in walk[:position[id(p)]])
                  for i, p in enumerate(params)}
    loss.backward()
    assert events == list(range(len(params)))[::-1]
    n_ops = sum(t._node is not None for t in walk)
    assert ops_before[len(params) - 1] <= 3  # the classifier's bias: after linear's backward
    assert ops_before[0] == n_ops  # the stem's conv weight: after the last op
    # in between, each parameter follows the op that used it, not the end of the walk
    assert sorted(ops_before.values()) == [ops_before[i] for i in range(len(params))][::-1]
    assert len(set(ops_before.values())) > len(params) // 2
