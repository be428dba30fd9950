"""tinymbv2.optim against torch.optim: same parameters, same gradients, same numbers."""
import numpy as np
import pytest
import torch

from tinymbv2 import optim
from tinymbv2.autograd import Tensor

SHAPES = [(3, 4), (5,), (2, 3, 2)]
STEPS = 50


def _init(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _grads(seed=1, steps=STEPS):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]


def _groups(params, groups):
    """[(indices, options)] -> group dicts; None -> the plain list."""
    if groups is None:
        return params
    return [dict(params=[params[i] for i in idx], **opts) for idx, opts in groups]


def _run_ours(cls, kwargs, groups=None, grads=None, skip=None):
    params = [Tensor(a.copy()) for a in _init()]
    opt = cls(_groups(params, groups), **kwargs)
    for t, gs in enumerate(grads or _grads()):
        for i, (p, g) in enumerate(zip(params, gs)):
            p.grad = None if skip and skip(t, i) else g.copy()
        opt.step()
    return [p.data for p in params]


def _run_torch(cls, kwargs, groups=None, grads=None, skip=None):
    params = [torch.tensor(a.copy(), requires_grad=True) for a in _init()]
    opt = cls(_groups(params, groups), foreach=False, **kwargs)
    for t, gs in enumerate(grads or _grads()):
        for i, (p, g) in enumerate(zip(params, gs)):
            p.grad = None if skip and skip(t, i) else torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in params]


def _max_err(ours, ref):
    abs_err = max(float(np.max(np.abs(a - b))) for a, b in zip(ours, ref))
    rel_err = max(float(np.max(np.abs(a - b) / (np.abs(b) + 1e-12))) for a, b in zip(ours, ref))
    return abs_err, rel_err


TWO_GROUPS = [([0, 2], {"lr": 0.03, "weight_decay": 0.1}), ([1], {})]

CASES = [
    (optim.SGD, torch.optim.SGD, dict(lr=0.1), None),
    (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9), None),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-2), None),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=4e-5), None),
    (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9), TWO_GROUPS),
    (optim.RMSprop, torch.optim.RMSprop, dict(lr=1e-2), None),
    (optim.RMSprop, torch.optim.RMSprop, dict(lr=1e-3, alpha=0.9, momentum=0.9, eps=1e-3), None),
    (optim.RMSprop, torch.optim.RMSprop, dict(lr=1e-3, centered=True, weight_decay=1e-2), None),
    (optim.RMSprop, torch.optim.RMSprop,
     dict(lr=1e-3, alpha=0.95, centered=True, momentum=0.5, weight_decay=1e-3), TWO_GROUPS),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2), None),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), None),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2, weight_decay=1e-2), TWO_GROUPS),
    (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2), None),
    (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2, betas=(0.5, 0.9), weight_decay=0.3), TWO_GROUPS),
]


@pytest.mark.parametrize("ours,theirs,kwargs,groups", CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_over_50_steps(ours, theirs, kwargs, groups):
    a = _run_ours(ours, kwargs, groups)
    b = _run_torch(theirs, kwargs, groups)
    abs_err, rel_err = _max_err(a, b)
    assert abs_err <= 1e-10 and rel_err <= 1e-10, (abs_err, rel_err)
    # the parameters really moved (a no-op optimizer would not pass by accident)
    assert max(float(np.max(np.abs(x - x0))) for x, x0 in zip(a, _init())) > 1e-3


@pytest.mark.parametrize("ours,theirs,kwargs", [
    (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.RMSprop, torch.optim.RMSprop, dict(lr=1e-2, momentum=0.9, centered=True)),
    (optim.Adam, torch.optim.Adam, dict(lr=1e-2)),
])
def test_params_without_grad_are_skipped_like_torch(ours, theirs, kwargs):
    skip = lambda t, i: (t + i) % 3 == 0  # noqa: E731  every param misses some steps
    a = _run_ours(ours, kwargs, skip=skip)
    b = _run_torch(theirs, kwargs, skip=skip)
    assert max(_max_err(a, b)) <= 1e-10


def _tf_rmsprop_reference(p0, grads, lr, rho, momentum, eps, centered):
    """tf.raw_ops.ApplyRMSProp / ApplyCenteredRMSProp, written from the TF 1 docs."""
    var = p0.copy()
    ms = np.ones_like(var)  # tf.train.RMSPropOptimizer initialises the 'rms' slot to ones
    mg = np.zeros_like(var)
    mom = np.zeros_like(var)
    for g in grads:
        ms = rho * ms + (1 - rho) * g * g
        if centered:
            mg = rho * mg + (1 - rho) * g
            mom = momentum * mom + lr * g / np.sqrt(ms - mg * mg + eps)
        else:
            mom = momentum * mom + lr * g / np.sqrt(ms + eps)
        var = var - mom
    return var


@pytest.mark.parametrize("momentum,eps,centered", [
    (0.9, 1.0, False), (0.9, 1e-3, True), (0.0, 1e-10, False), (0.5, 1e-2, True)])
def test_rmsprop_tf_matches_tensorflow_rule(momentum, eps, centered):
    grads = _grads()
    ours = _run_ours(optim.RMSpropTF, dict(lr=0.045, alpha=0.9, momentum=momentum, eps=eps,
                                           centered=centered), grads=grads)
    for i, p0 in enumerate(_init()):
        ref = _tf_rmsprop_reference(p0, [g[i] for g in grads], 0.045, 0.9, momentum, eps, centered)
        np.testing.assert_allclose(ours[i], ref, rtol=1e-12, atol=1e-13)


def test_rmsprop_tf_differs_from_torch_rmsprop_as_documented():
    p = Tensor(np.array([1.0]))
    opt = optim.RMSpropTF([p], lr=0.1, alpha=0.9, eps=1e-10)
    p.grad = np.array([0.5])
    opt.step()
    # ms = 0.9 * 1 + 0.1 * 0.25 = 0.925: the first step is ~lr*g, not lr*g/sqrt(0.1 g^2)
    assert p.data[0] == pytest.approx(1.0 - 0.1 * 0.5 / np.sqrt(0.925 + 1e-10), abs=1e-15)
    q = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    topt = torch.optim.RMSprop([q], lr=0.1, alpha=0.9, eps=1e-10)
    q.grad = torch.tensor([0.5], dtype=torch.float64)
    topt.step()
    assert abs(1.0 - q.item()) > 3 * abs(1.0 - p.data[0])  # torch's first step is ~3.16x larger


def test_rmsprop_tf_lr_in_momentum_only_matters_when_lr_changes():
    grads = _grads(steps=20)

    def run(lr_in_momentum, drop_at):
        params = [Tensor(a.copy()) for a in _init()]
        opt = optim.RMSpropTF(params, lr=0.05, momentum=0.9, lr_in_momentum=lr_in_momentum)
        for t, gs in enumerate(grads):
            if t == drop_at:
                opt.param_groups[0]["lr"] = 0.005
            for p, g in zip(params, gs):
                p.grad = g
            opt.step()
        return params[0].data

    np.testing.assert_allclose(run(True, None), run(False, None), rtol=1e-12)
    assert np.max(np.abs(run(True, 10) - run(False, 10))) > 1e-3


@pytest.mark.parametrize("cls,kwargs", [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.RMSprop, dict(lr=1e-2, momentum=0.9, centered=True)),
    (optim.RMSpropTF, dict(lr=1e-2, momentum=0.9, eps=1e-3)),
    (optim.Adam, dict(lr=1e-2, weight_decay=1e-2)),
    (optim.AdamW, dict(lr=1e-2)),
])
def test_state_dict_round_trip(cls, kwargs):
    grads = _grads(steps=20)

    def feed(params, opt, gs_list):
        for gs in gs_list:
            for p, g in zip(params, gs):
                p.grad = g.copy()
            opt.step()

    full = [Tensor(a.copy()) for a in _init()]
    opt_full = cls(_groups(full, TWO_GROUPS), **kwargs)
    feed(full, opt_full, grads)

    first = [Tensor(a.copy()) for a in _init()]
    opt_first = cls(_groups(first, TWO_GROUPS), **kwargs)
    feed(first, opt_first, grads[:10])
    saved = opt_first.state_dict()
    snapshot = [p.data.copy() for p in first]
    feed(first, opt_first, grads[10:12])  # stepping on must not change the saved dict
    assert sorted(saved["state"]) == [0, 1, 2]
    assert saved["param_groups"][0]["params"] == [0, 1] and saved["param_groups"][1]["params"] == [2]

    fresh_params = [Tensor(a) for a in snapshot]
    # options come from the checkpoint, not from the constructor
    fresh = cls(_groups(fresh_params, TWO_GROUPS), **{**kwargs, "lr": 123.0})
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == opt_full.param_groups[0]["lr"]
    feed(fresh_params, fresh, grads[10:])
    for a, b in zip(fresh_params, full):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_errors():
    p = [Tensor(a.copy()) for a in _init()]
    opt = optim.SGD(p, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="parameter groups"):
        optim.SGD(_groups(p, TWO_GROUPS), lr=0.1).load_state_dict(opt.state_dict())
    for q, g in zip(p, _grads()[0]):
        q.grad = g
    opt.step()
    other = optim.SGD([Tensor(np.zeros((3, 4))), Tensor(np.zeros(5)), Tensor(np.zeros(7))], lr=1)
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(opt.state_dict())


def test_in_place_update_keeps_dtype_and_identity():
    p = Tensor(np.ones((2, 2), dtype=np.float32))
    data = p.data
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.full((2, 2), 0.5, dtype=np.float32)
    opt.step()
    assert p.data is data and p.data.dtype == np.float32
    np.testing.assert_allclose(p.data, 0.9, rtol=1e-6)
    opt.zero_grad()
    assert p.grad is None


@pytest.mark.parametrize("make,match", [
    (lambda p: optim.SGD(p, lr=-0.1), "SGD: lr must be a finite number >= 0, got -0.1"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-1), "SGD: momentum"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "nesterov"),
    (lambda p: optim.RMSprop(p, lr=-1), "RMSprop: lr"),
    (lambda p: optim.RMSprop(p, alpha=1.5), r"RMSprop: alpha must be in \[0, 1\], got 1.5"),
    (lambda p: optim.RMSpropTF(p, eps=-1e-3), "RMSpropTF: eps"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), r"Adam: betas\[1\] must be in \[0, 1\), got 1.0"),
    (lambda p: optim.Adam(p, betas=(0.9,)), "Adam: betas must be a pair"),
    (lambda p: optim.AdamW(p, weight_decay=-1), "AdamW: weight_decay"),
    (lambda p: optim.SGD([], lr=0.1), "empty parameter list"),
    (lambda p: optim.SGD(p + p[:1], lr=0.1), "more than once"),
    (lambda p: optim.SGD([{"params": p, "weight_deacy": 1}], lr=0.1), "unknown option"),
])
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make([Tensor(a) for a in _init()])


def test_bad_params_raise_type_error():
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(Tensor(np.zeros(3)), lr=0.1)
    with pytest.raises(TypeError, match="got ndarray"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="lr must be a real number"):
        optim.SGD([Tensor(np.zeros(3))], lr="0.1")
    p = Tensor(np.zeros(3))
    p.grad = np.zeros(4)
    with pytest.raises(ValueError, match=r"SGD.step: gradient shape \(4,\)"):
        optim.SGD([p], lr=0.1).step()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [dict(), dict(momentum=0.9, weight_decay=1e-2),
                                    dict(momentum=0.5, alpha=0.9, eps=1e-3),
                                    dict(weight_decay=1e-2)])
def test_rmsprop_numba_kernel_gives_the_numpy_bits(dtype, kwargs):
    """With the numba kernels RMSprop runs one fused pass (kernels/numba/optim.py); it must give the
    very bits of the NumPy form the reference kernel set runs, big and small parameters."""
    import tinymbv2

    rng = np.random.default_rng(0)
    shapes = [(3, 4), (70_000,)]  # the second takes the parallel loop
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(4)]
    results = {}
    for kset in ("reference", "numba"):
        params = [Tensor(a.copy(), requires_grad=True) for a in init]
        opt = optim.RMSprop(params, lr=1e-2, **kwargs)
        with tinymbv2.use_kernels(kset):
            for step in grads:
                for p, g in zip(params, step):
                    p.grad = g.copy()
                opt.step()
        results[kset] = [p.data for p in params]
    for a, b in zip(results["numba"], results["reference"]):
        assert a.dtype == dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("make,match", [
    (lambda p: optim.SGD(p, lr=float("inf")), "SGD: lr must be a finite number >= 0, got inf"),
    (lambda p: optim.SGD(p, lr=float("nan")), "SGD: lr must be a finite number >= 0, got nan"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=5), r"SGD: momentum must be in \[0, 1\), got 5"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=1.0), r"SGD: momentum must be in \[0, 1\), got 1.0"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.5, dampening=2),
     r"SGD: dampening must be in \[0, 1\], got 2"),
    (lambda p: optim.RMSprop(p, lr=float("inf")), "RMSprop: lr must be a finite number >= 0, got inf"),
    (lambda p: optim.RMSprop(p, momentum=1.5), r"RMSprop: momentum must be in \[0, 1\), got 1.5"),
    (lambda p: optim.RMSpropTF(p, momentum=-0.1), r"RMSpropTF: momentum must be in \[0, 1\), got -0.1"),
    (lambda p: optim.Adam(p, lr=float("-inf")), "Adam: lr must be a finite number >= 0, got -inf"),
    (lambda p: optim.AdamW(p, eps=float("nan")), "AdamW: eps must be a finite number >= 0, got nan"),
    (lambda p: optim.SGD([{"params": p[:1], "lr": float("inf")}], lr=0.1),
     "SGD: lr must be a finite number >= 0, got inf"),  # a group's own options too
])
def test_non_finite_rates_and_momenta_outside_0_1_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make([Tensor(a) for a in _init()])


def _without_kind(state):
    """An optimizer state as it was saved before states recorded their kind."""
    return {k: v for k, v in state.items() if k != "kind"}


@pytest.mark.parametrize("saved_by,loaded_by,match", [
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=0.1),
     "Adam.load_state_dict: expected a state saved by Adam, got one saved by SGD"),
    (lambda p: optim.RMSprop(p), lambda p: optim.RMSpropTF(p),
     "RMSpropTF.load_state_dict: expected a state saved by RMSpropTF, got one saved by RMSprop"),
    (lambda p: optim.Adam(p), lambda p: optim.AdamW(p),  # the same options, another update
     "AdamW.load_state_dict: expected a state saved by AdamW, got one saved by Adam"),
    # saved before states recorded their kind: told apart by the options this one lacks
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=0.1),
     r"Adam.load_state_dict: expected Adam's options in parameter group 0, got unknown "
     r"\['dampening', 'momentum', 'nesterov'\] \(it holds .*\); was it saved by another optimizer"),
    # the same kind, another form of the update
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
     lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
     r"SGD.load_state_dict: expected nesterov=False in parameter group 0 \(as this SGD was "
     r"built\), got nesterov=True"),
    (lambda p: optim.RMSpropTF(p, momentum=0.9), lambda p: optim.RMSpropTF(p, lr_in_momentum=False),
     "RMSpropTF.load_state_dict: expected lr_in_momentum=False .*, got lr_in_momentum=True"),
], ids=["kind", "kind-rmsprop", "kind-adamw", "no-kind", "nesterov", "lr_in_momentum"])
def test_loading_another_optimizers_state_is_one_line_and_changes_nothing(
        saved_by, loaded_by, match, request):
    params = [Tensor(a) for a in _init()]
    source = saved_by(params)
    for p, g in zip(params, _grads()[0]):
        p.grad = g
    source.step()
    state = source.state_dict()
    if request.node.callspec.id == "no-kind":
        state = _without_kind(state)
    target = loaded_by([Tensor(a) for a in _init()])
    before = (target.state_dict(), repr(target))
    with pytest.raises(ValueError, match="^" + match) as caught:
        target.load_state_dict(state)
    assert "\n" not in str(caught.value)
    assert repr(target) == before[1] and target.state_dict()["state"] == before[0]["state"] == {}


@pytest.mark.parametrize("kind", [True, False], ids=["kind", "no-kind"])
def test_a_state_saved_before_an_option_existed_loads_with_its_default(kind):
    """RMSpropTF's groups saved without ``decoupled_decay`` (as a version before that option
    would have saved them): the state loads, the option takes this optimizer's value, and
    the run goes on with the very numbers of the run that never stopped."""
    kwargs = dict(lr=1e-2, momentum=0.9, weight_decay=1e-2, decoupled_decay=True)
    grads = _grads(steps=6)

    def feed(params, opt, gs_list):
        for gs in gs_list:
            for p, g in zip(params, gs):
                p.grad = g.copy()
            opt.step()

    full = [Tensor(a.copy()) for a in _init()]
    feed(full, optim.RMSpropTF(full, **kwargs), grads)
    first = [Tensor(a.copy()) for a in _init()]
    opt_first = optim.RMSpropTF(first, **kwargs)
    feed(first, opt_first, grads[:3])
    saved = opt_first.state_dict()
    for group in saved["param_groups"]:
        del group["decoupled_decay"]
    if not kind:
        saved = _without_kind(saved)
    resumed = [Tensor(p.data.copy()) for p in first]
    opt = optim.RMSpropTF(resumed, **{**kwargs, "lr": 5.0})
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["decoupled_decay"] is True and opt.param_groups[0]["lr"] == 1e-2
    feed(resumed, opt, grads[3:])
    for a, b in zip(resumed, full):
        assert a.data.tobytes() == b.data.tobytes()


def test_a_scheduler_key_in_a_saved_group_is_not_an_unknown_option():
    params = [Tensor(a) for a in _init()]
    source = optim.SGD(params, lr=0.1, momentum=0.9)
    optim.lr_scheduler.OneCycleLR(source, max_lr=0.1, total_steps=10)  # adds initial_lr, max_lr ...
    target = optim.SGD([Tensor(a) for a in _init()], lr=0.1, momentum=0.9)
    target.load_state_dict(source.state_dict())
    assert target.param_groups[0]["max_lr"] == 0.1
