"""tinymbv2.optim.lr_scheduler against torch.optim.lr_scheduler: the same lr sequences."""
import warnings

import numpy as np
import pytest
import torch

from tinymbv2 import optim
from tinymbv2.autograd import Tensor
from tinymbv2.optim import lr_scheduler as ls

STEPS = 60
LRS = (0.1, 0.045)


def _opts(opt_name="SGD", **kw):
    ours = [Tensor(np.zeros(3)), Tensor(np.zeros(2))]
    theirs = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    o = getattr(optim, opt_name)([{"params": [ours[0]], "lr": LRS[0]},
                                  {"params": [ours[1]], "lr": LRS[1]}], **kw)
    t = getattr(torch.optim, opt_name)([{"params": [theirs[0]], "lr": LRS[0]},
                                        {"params": [theirs[1]], "lr": LRS[1]}], **kw)
    return o, t


def _sequences(make, opt_name="SGD", steps=STEPS, extra=("lr",), **opt_kw):
    """Per step: every group's lr (and any other group keys in ``extra``), ours and torch's."""
    o, t = _opts(opt_name, **opt_kw)
    so, st = make(ls, o), make(torch.optim.lr_scheduler, t)

    def snap(opt, sched):
        row = list(sched.get_last_lr())
        for key in extra[1:]:
            row += [g[key] if key != "betas" else g[key][0] for g in opt.param_groups]
        return row

    a, b = [snap(o, so)], [snap(t, st)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that opt.step() was never called
        for _ in range(steps):
            so.step()
            st.step()
            a.append(snap(o, so))
            b.append(snap(t, st))
    assert [g["lr"] for g in o.param_groups] == a[-1][:2]  # the optimizer really holds them
    assert [g["initial_lr"] for g in o.param_groups] == [g["initial_lr"] for g in t.param_groups]
    return np.array(a, dtype=float), np.array(b, dtype=float)


SCHEDULES = {
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, gamma=0.98),
    "StepLR": lambda m, o: m.StepLR(o, step_size=7, gamma=0.5),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=25, eta_min=1e-4),
    "CosineAnnealingLR-long": lambda m, o: m.CosineAnnealingLR(o, T_max=60),
    "LinearLR": lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=12),
    "LinearLR-default": lambda m, o: m.LinearLR(o),
    "OneCycleLR": lambda m, o: m.OneCycleLR(o, max_lr=0.4, total_steps=STEPS),
    "OneCycleLR-linear": lambda m, o: m.OneCycleLR(o, max_lr=[0.4, 0.2], total_steps=STEPS + 10,
                                                   pct_start=0.25, anneal_strategy="linear",
                                                   div_factor=10.0, final_div_factor=100.0),
    "OneCycleLR-no-momentum": lambda m, o: m.OneCycleLR(o, max_lr=0.4, total_steps=STEPS,
                                                        cycle_momentum=False),
    "Warmup+Cosine": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=55)],
        milestones=[5]),
    "Warmup+Step+Exp": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.25, total_iters=4), m.StepLR(o, 10, 0.3),
            m.ExponentialLR(o, 0.95)], milestones=[6, 30]),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_lr_sequence_matches_torch(name):
    a, b = _sequences(SCHEDULES[name], momentum=0.9)
    assert np.max(np.abs(a - b)) <= 1e-12, np.max(np.abs(a - b))
    assert np.ptp(a[:, 0]) > 1e-3  # the lr really changed


def test_one_cycle_cycles_momentum_and_beta1_like_torch():
    a, b = _sequences(SCHEDULES["OneCycleLR"], extra=("lr", "momentum"), momentum=0.9)
    assert np.max(np.abs(a - b)) <= 1e-12
    assert a[:, 2].min() == pytest.approx(0.85) and a[0, 2] == pytest.approx(0.95)
    a, b = _sequences(SCHEDULES["OneCycleLR"], opt_name="Adam", extra=("lr", "betas"))
    assert np.max(np.abs(a - b)) <= 1e-12


def test_chained_schedulers_match_torch():
    """Two schedulers on one optimizer compose through the recursive forms."""
    def make(m, o):
        s1, s2 = m.ExponentialLR(o, 0.97), m.StepLR(o, 9, 0.5)

        class Both:
            def step(self):
                s1.step()
                s2.step()

            def get_last_lr(self):
                return s2.get_last_lr()
        return Both()

    a, b = _sequences(make)
    assert np.max(np.abs(a - b)) <= 1e-12


def test_scheduler_state_dict_round_trip():
    def build(opt):
        return ls.SequentialLR(opt, [ls.LinearLR(opt, 0.1, total_iters=5),
                                     ls.CosineAnnealingLR(opt, T_max=40)], milestones=[5])

    o1, _ = _opts()
    s1 = build(o1)
    for _ in range(12):
        s1.step()
    saved_opt, saved_sched = o1.state_dict(), s1.state_dict()
    o2, _ = _opts()
    s2 = build(o2)  # as PyTorch advises: build the scheduler, then load both
    o2.load_state_dict(saved_opt)
    s2.load_state_dict(saved_sched)
    for _ in range(20):
        s1.step()
        s2.step()
        assert s1.get_last_lr() == s2.get_last_lr()
        assert [g["lr"] for g in o1.param_groups] == [g["lr"] for g in o2.param_groups]


def test_scheduler_bad_arguments():
    o, _ = _opts()
    with pytest.raises(ValueError, match="StepLR: step_size must be an integer >= 1"):
        ls.StepLR(o, step_size=0)
    with pytest.raises(ValueError, match=r"LinearLR: start_factor must be in \(0, 1\]"):
        ls.LinearLR(o, start_factor=0.0)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max"):
        ls.CosineAnnealingLR(o, T_max=-3)
    with pytest.raises(ValueError,
                       match="ExponentialLR: gamma must be a finite number >= 0, got -0.5"):
        ls.ExponentialLR(o, gamma=-0.5)
    with pytest.raises(ValueError, match="OneCycleLR: anneal_strategy"):
        ls.OneCycleLR(o, max_lr=1.0, total_steps=10, anneal_strategy="step")
    with pytest.raises(ValueError, match="OneCycleLR: max_lr has 3 values for 2"):
        ls.OneCycleLR(o, max_lr=[1.0, 1.0, 1.0], total_steps=10)
    with pytest.raises(ValueError, match="SequentialLR: expected 1 milestones"):
        ls.SequentialLR(o, [ls.StepLR(o, 3), ls.StepLR(o, 4)], milestones=[])
    with pytest.raises(TypeError, match="expected a tinymbv2.optim Optimizer"):
        ls.StepLR(object(), 3)
    sched = ls.OneCycleLR(o, max_lr=1.0, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="stepped 4 times, but total_steps is 3"):
        sched.step()


def test_momentum_bounds_of_one_cycle_are_checked():
    o, _ = _opts()
    with pytest.raises(ValueError, match=r"OneCycleLR: max_momentum must be in \[0, 1\), got 1.2"):
        ls.OneCycleLR(o, max_lr=1.0, total_steps=10, max_momentum=1.2)


def _without_kind(state):
    """A state as it was saved before states recorded their kind."""
    return {k: v for k, v in state.items() if k != "kind"}


@pytest.mark.parametrize("saved,loaded,match", [
    (lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=20), lambda o: ls.CosineAnnealingLR(o, 20),
     "expected a state saved by CosineAnnealingLR, got one saved by OneCycleLR"),
    (lambda o: ls.CosineAnnealingLR(o, 20), lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=20),
     "expected a state saved by OneCycleLR, got one saved by CosineAnnealingLR"),
    (lambda o: ls.ExponentialLR(o, 0.9), lambda o: ls.StepLR(o, 5, 0.9),
     "expected a state saved by StepLR, got one saved by ExponentialLR"),
    # saved before states recorded their kind: told apart by what this kind does not have
    (lambda o: _without_kind(ls.ExponentialLR(o, 0.9).state_dict()),
     lambda o: ls.CosineAnnealingLR(o, 20),
     r"expected the attributes of CosineAnnealingLR, got unknown \['gamma'\]; was it saved by "
     "another scheduler"),
    # the same kind with another value of an option that defines the schedule
    (lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=20),  # momentum cycled, then not
     lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=20, cycle_momentum=False),
     "expected cycle_momentum=False \\(as this OneCycleLR was built\\), got cycle_momentum=True"),
    (lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=20, pct_start=0.25),
     lambda o: ls.OneCycleLR(o, max_lr=0.1, total_steps=20),
     "expected pct_start=0.3 .*, got pct_start=0.25"),
    (lambda o: ls.StepLR(o, 5, 0.5), lambda o: ls.StepLR(o, 5, 0.1),
     "expected gamma=0.1 .*, got gamma=0.5"),
])
def test_another_schedulers_state_is_refused_not_merged(saved, loaded, match):
    o1, _ = _opts()
    source = saved(o1)
    state = source if isinstance(source, dict) else source.state_dict()
    o2, _ = _opts()
    target = loaded(o2)
    before = dict(target.__dict__)
    name = type(target).__name__
    with pytest.raises(ValueError, match=rf"^{name}.load_state_dict: {match}") as caught:
        target.load_state_dict(state)
    assert "\n" not in str(caught.value)
    assert target.__dict__ == before


def test_a_state_saved_before_an_attribute_existed_loads_with_its_default():
    """A one-cycle state saved before ``pct_start`` and ``kind`` were recorded (as this
    package wrote them until then) resumes: the missing attribute takes the value the
    scheduler was built with, and the schedule goes on, stretched, as a fresh one would."""
    o_old, _ = _opts()
    old = ls.OneCycleLR(o_old, max_lr=0.1, total_steps=109)
    _lrs(old, 40)
    saved_opt = o_old.state_dict()
    saved = {k: v for k, v in old.state_dict().items() if k not in ("kind", "pct_start")}
    o, _ = _opts()
    sched = ls.OneCycleLR(o, max_lr=0.1, total_steps=110)
    o.load_state_dict(saved_opt)
    sched.load_state_dict(saved)
    assert sched.pct_start == 0.3 and sched.last_epoch == 40 and sched.planned_steps() == 109
    sched.replan(110)
    o_fresh, _ = _opts()
    fresh = ls.OneCycleLR(o_fresh, max_lr=0.1, total_steps=110)
    _lrs(fresh, 40)
    assert _lrs(sched, 69) == _lrs(fresh, 69)


def test_a_sequential_state_is_checked_whole_before_any_part_loads():
    def build(opt, gamma):
        return ls.SequentialLR(opt, [ls.LinearLR(opt, 0.1, total_iters=5),
                                     ls.ExponentialLR(opt, gamma)], milestones=[5])

    o1, _ = _opts()
    saved = build(o1, 0.9)
    _lrs(saved, 8)
    o2, _ = _opts()
    target = build(o2, 0.8)
    before = [dict(s.__dict__) for s in (target, *target._schedulers)]
    with pytest.raises(ValueError, match=r"^ExponentialLR.load_state_dict: expected gamma=0.8 "):
        target.load_state_dict(saved.state_dict())
    assert [dict(s.__dict__) for s in (target, *target._schedulers)] == before


def _lrs(sched, steps):
    out = []
    for _ in range(steps):
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


@pytest.mark.parametrize("make", [
    lambda o, n: ls.OneCycleLR(o, max_lr=[0.1, 0.045], total_steps=n),
    lambda o, n: ls.CosineAnnealingLR(o, T_max=n),
])
def test_replan_stretches_the_schedule_from_the_step_reached(make):
    """After k of 20 steps, replan(40) continues on the 40-step curve: the lrs from step k
    on are those of a schedule built for 40 steps (a one-cycle's momentum too)."""
    o_long, _ = _opts()
    long = make(o_long, 40)
    expected = _lrs(long, 39)
    o, _ = _opts()
    sched = make(o, 20)
    assert sched.planned_steps() == 20
    _lrs(sched, 12)
    sched.replan(40)
    assert sched.planned_steps() == 40
    # the lr jumps to the 40-step curve's value at step 12, then follows it
    np.testing.assert_allclose(sched.get_last_lr()[0], expected[11], rtol=1e-12)
    np.testing.assert_allclose(o.param_groups[0]["lr"], expected[11], rtol=1e-12)
    np.testing.assert_allclose(_lrs(sched, 27), expected[12:], rtol=1e-9)
    if "momentum" in o.param_groups[0] and isinstance(sched, ls.OneCycleLR):
        assert o.param_groups[0]["momentum"] == pytest.approx(o_long.param_groups[0]["momentum"])
    with pytest.raises(ValueError, match="total_steps must be an integer >= 39"):
        sched.replan(20)  # fewer steps than already taken


def test_replan_is_refused_by_a_schedule_without_an_end():
    o, _ = _opts()
    sched = ls.ExponentialLR(o, 0.9)
    assert sched.planned_steps() is None
    with pytest.raises(TypeError, match="ExponentialLR: has no planned length to change"):
        sched.replan(10)


def test_replan_gives_exactly_the_schedule_built_for_that_length():
    """Stretched from n0 to n steps (40 x 30 lengths), a one-cycle's phases, lrs and
    momenta are those of a cycle built for n steps, to the bit: its warm-up boundary comes
    from pct_start, not from the boundary placed for n0 (109 -> 110 steps once put it at
    31.999999999999993 instead of 32.0, and step 32 in the annealing phase)."""
    for n0 in range(10, 130, 3):  # 109 among them
        for n in range(n0, n0 + 30):
            o, _ = _opts()
            sched = ls.OneCycleLR(o, max_lr=0.1, total_steps=n0)
            taken = min(n0, 32)
            _lrs(sched, taken)
            sched.replan(n)
            o_fresh, _ = _opts()
            fresh = ls.OneCycleLR(o_fresh, max_lr=0.1, total_steps=n)
            _lrs(fresh, taken)
            assert sched._phases == fresh._phases, (n0, n)
            assert sched.get_last_lr() == fresh.get_last_lr(), (n0, n)
            rest = n - taken
            assert _lrs(sched, rest) == _lrs(fresh, rest), (n0, n)
            assert ([g["momentum"] for g in o.param_groups]
                    == [g["momentum"] for g in o_fresh.param_groups]), (n0, n)
