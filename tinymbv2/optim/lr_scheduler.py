r"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s names, calls and numbers.

A scheduler owns a counter ``last_epoch`` (really "steps taken": call ``step()`` once
per epoch or once per batch, as the schedule is meant) and writes ``group['lr']`` of
every parameter group of its optimizer. Construction performs step 0, so right after
``sched = StepLR(opt, ...)`` the optimizer already holds the epoch-0 lr. The usual loop:

    for epoch in range(epochs):
        train_one_epoch(model, opt)     # many opt.step()
        sched.step()

Like PyTorch, ``step()`` uses the *recursive* (chainable) form
$\text{lr}_t = f(\text{lr}_{t-1})$ so that several schedulers can be chained on one
optimizer, and the *closed form* $\text{lr}_t = f(\text{base_lr}, t)$ where PyTorch does
(``SequentialLR`` restarting a scheduler at a milestone). Both are transcribed from torch
2.14, so the sequences agree with PyTorch to the last few ulps. On construction each group
gets ``initial_lr`` (its lr at that moment, unless already set) and ``base_lrs``
are read from it.

The paper's schedule (section 6.1) is ``ExponentialLR(opt, gamma=0.98)`` stepped per
epoch with lr 0.045.
"""
from __future__ import annotations

import math
from bisect import bisect_right

from .optimizer import Optimizer, check_hyper


def _check_int(owner: str, name: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")


class LRScheduler:
    """Base class: ``step()``, ``get_last_lr()``, ``state_dict()``, ``load_state_dict()``.

    Subclasses define ``get_lr()`` (the recursive form, called after ``last_epoch`` has
    been advanced) and, where one exists, ``_get_closed_form_lr()``.

    Args:
        optimizer: The [Optimizer][tinymbv2.optim.optimizer.Optimizer] whose groups'
            ``lr`` it writes.
        last_epoch: The step reached, to resume a schedule (-1: a new one).

    Raises:
        TypeError: ``optimizer`` is not a tinymbv2 Optimizer.
        KeyError: Resuming (``last_epoch != -1``) with groups that were never scheduled.
    """

    defining: tuple[str, ...] = ()
    """The options that make the schedule what it is, as attribute names (its planned
    length aside: that may change on resume, see
    [replan][tinymbv2.optim.lr_scheduler.LRScheduler.replan]). A saved state with another
    value of one is refused by
    [load_state_dict][tinymbv2.optim.lr_scheduler.LRScheduler.load_state_dict]."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: expected a tinymbv2.optim Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"{type(self).__name__}: param_groups[{i}] has no 'initial_lr'; resuming "
                        f"with last_epoch={last_epoch} needs an optimizer that was scheduled before"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._is_initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        """The lr of each parameter group as set by the latest ``step()``."""
        return list(self._last_lr)

    def step(self) -> None:
        """Advance the schedule by one and write the new lr into the optimizer."""
        self._step_count += 1
        self._update_lr(None)

    def _update_lr(self, epoch: int | None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:  # jump to ``epoch``: closed form where one exists (PyTorch's behaviour)
            self.last_epoch = epoch
            closed = getattr(self, "_get_closed_form_lr", None)
            values = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Every attribute except the optimizer (PyTorch's format), and one key more:
        ``kind``, the scheduler's class name."""
        return {"kind": type(self).__name__,
                **{k: v for k, v in self.__dict__.items() if k != "optimizer"}}

    def load_state_dict(self, state_dict: dict) -> None:
        """Take over the attributes a ``state_dict()`` saved.

        [checked_state][tinymbv2.optim.lr_scheduler.checked_state] says what is refused, and
        what an older state without some attribute gets.

        Args:
            state_dict: The dict [state_dict][tinymbv2.optim.lr_scheduler.LRScheduler.state_dict]
                returned.

        Raises:
            ValueError: The state is not one of this schedule.
        """
        self.__dict__.update(checked_state(self, state_dict))

    def planned_steps(self) -> int | None:
        """How many steps the schedule is planned over; None when it has no end
        (a step or exponential decay goes on as long as it is stepped)."""
        return None

    def replan(self, total_steps: int) -> None:
        """Plan the schedule over ``total_steps`` from the step it has reached.

        Only a schedule with an end ([OneCycleLR][tinymbv2.optim.lr_scheduler.OneCycleLR],
        [CosineAnnealingLR][tinymbv2.optim.lr_scheduler.CosineAnnealingLR]) can; the others
        raise.

        Args:
            total_steps: The new length of the whole schedule, in steps.
        """
        raise TypeError(f"{type(self).__name__}: has no planned length to change")


def checked_state(scheduler: LRScheduler, state_dict) -> dict:
    """The attributes of ``state_dict`` to load into ``scheduler``, checked to be its schedule's.

    Refused, since merging it would make a schedule that no run followed: a state of
    another kind (its ``kind``), one with an attribute this scheduler does not have
    (another kind's, saved before states recorded their kind), and one saved with another
    value of a [defining][tinymbv2.optim.lr_scheduler.LRScheduler.defining] option
    (one-cycle with and without momentum cycling). An attribute the state lacks (it was
    saved before the attribute existed) keeps the value this scheduler was built with: its
    default.

    Args:
        scheduler: The scheduler to load into.
        state_dict: The saved state.

    Returns:
        The attributes to set.

    Raises:
        ValueError: The state is refused (one line).
    """
    name = type(scheduler).__name__
    where = f"{name}.load_state_dict"
    if not isinstance(state_dict, dict):
        raise ValueError(f"{where}: expected a dict, got {type(state_dict).__name__}")
    state = dict(state_dict)
    kind = state.pop("kind", None)
    if kind is not None and kind != name:
        raise ValueError(f"{where}: expected a state saved by {name}, got one saved by {kind}")
    own = scheduler.state_dict()
    for key in scheduler.defining:  # first: another value may bring its own attributes
        if key in state and state[key] != own[key]:
            raise ValueError(f"{where}: expected {key}={own[key]!r} (as this {name} was built), "
                             f"got {key}={state[key]!r}: the state is of another schedule")
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ValueError(f"{where}: expected the attributes of {name}, got unknown {unknown}; "
                         "was it saved by another scheduler?")
    return state


class StepLR(LRScheduler):
    r"""Multiply the lr by ``gamma`` every ``step_size`` steps.

    $\text{lr}_t = \text{base} \cdot \gamma^{\lfloor t / \text{step_size} \rfloor}$.

    Args:
        optimizer: The [Optimizer][tinymbv2.optim.optimizer.Optimizer] whose groups'
            ``lr`` it writes.
        step_size: The steps between two multiplications, an int >= 1.
        gamma: $\gamma$, the factor, a finite number >= 0.
        last_epoch: The step reached, to resume a schedule (-1: a new one).

    Raises:
        ValueError: An option out of its range.
    """

    defining = ("step_size", "gamma")

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        _check_int("StepLR", "step_size", step_size)
        check_hyper("StepLR", "gamma", gamma)
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [b * self.gamma ** (self.last_epoch // self.step_size) for b in self.base_lrs]


class ExponentialLR(LRScheduler):
    r"""Multiply the lr by ``gamma`` every step (the paper: 0.98 per epoch).

    $\text{lr}_t = \text{base} \cdot \gamma^t$.

    Args:
        optimizer: The [Optimizer][tinymbv2.optim.optimizer.Optimizer] whose groups'
            ``lr`` it writes.
        gamma: $\gamma$, the factor, a finite number >= 0.
        last_epoch: The step reached, to resume a schedule (-1: a new one).

    Raises:
        ValueError: ``gamma`` out of its range.
    """

    defining = ("gamma",)

    def __init__(self, optimizer, gamma: float, last_epoch: int = -1):
        check_hyper("ExponentialLR", "gamma", gamma)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._current_lrs()
        return [lr * self.gamma for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        return [b * self.gamma ** self.last_epoch for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Half a cosine from the base lr down to ``eta_min`` over ``T_max`` steps.

    SGDR (Loshchilov & Hutter 2017) without restarts.

    Closed form:
    $\text{lr}_t = \eta_{min} + (\text{base} - \eta_{min}) \frac{1 + \cos(\pi t / T)}{2}$.
    ``step()`` uses PyTorch's recursive form
    $\text{lr}_t = \eta_{min} + (\text{lr}_{t-1} - \eta_{min})
    \frac{1 + \cos(\pi t / T)}{1 + \cos(\pi (t - 1) / T)}$; past ``T_max`` the lr rises
    again (a cosine of period $2T$), as in PyTorch.

    Args:
        optimizer: The [Optimizer][tinymbv2.optim.optimizer.Optimizer] whose groups'
            ``lr`` it writes.
        T_max: $T$, the steps of the half cosine, an int >= 1.
        eta_min: $\eta_{min}$, the lr at the end, a finite number >= 0.
        last_epoch: The step reached, to resume a schedule (-1: a new one).

    Raises:
        ValueError: An option out of its range.
    """

    defining = ("eta_min",)  # T_max, the length, may change on resume (replan)

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        _check_int("CosineAnnealingLR", "T_max", T_max)
        check_hyper("CosineAnnealingLR", "eta_min", eta_min)
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and t > 0:
            return [lo + (b - lo) * (1 + math.cos(t * math.pi / T)) / 2 for b in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [lr + (b - lo) * (1 - math.cos(math.pi / T)) / 2
                    for b, lr in zip(self.base_lrs, self._current_lrs())]
        return [(1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                * (lr - lo) + lo for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        lo = self.eta_min
        return [lo + (b - lo) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for b in self.base_lrs]

    def planned_steps(self) -> int:
        """``T_max``: the steps from the base lr down to ``eta_min``."""
        return self.T_max

    def replan(self, total_steps: int) -> None:
        """Stretch (or shorten) the half cosine to end at ``total_steps``.

        ``T_max`` changes, the steps already taken stay, and the lr jumps to the new curve's
        value there (the closed form), from which the recursive form of ``step()`` carries on
        exactly.

        Args:
            total_steps: The new ``T_max``.
        """
        _check_int("CosineAnnealingLR", "total_steps", total_steps, low=max(1, self.last_epoch))
        self.T_max = total_steps
        self._update_lr(self.last_epoch)


class LinearLR(LRScheduler):
    r"""Scale the lr linearly from ``start_factor`` to ``end_factor`` times the base lr.

    The ramp takes ``total_iters`` steps.

    Closed form: $\text{lr}_t = \text{base} \, (s + (e - s) \min(t, n) / n)$ with
    $s$, $e$, $n$ the three options; the usual warm-up is
    ``LinearLR(opt, start_factor=0.1, total_iters=5)`` followed by another schedule in a
    [SequentialLR][tinymbv2.optim.lr_scheduler.SequentialLR].

    Args:
        optimizer: The [Optimizer][tinymbv2.optim.optimizer.Optimizer] whose groups'
            ``lr`` it writes.
        start_factor: $s$, the factor at step 0, in (0, 1].
        end_factor: $e$, the factor from step ``total_iters`` on, in [0, 1].
        total_iters: $n$, the steps of the ramp, an int >= 0.
        last_epoch: The step reached, to resume a schedule (-1: a new one).

    Raises:
        ValueError: An option out of its range.
    """

    defining = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1):
        if not isinstance(start_factor, (int, float)) or not 0 < start_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], got {start_factor!r}")
        if not isinstance(end_factor, (int, float)) or not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], got {end_factor!r}")
        _check_int("LinearLR", "total_iters", total_iters)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        s, e, n, t = self.start_factor, self.end_factor, self.total_iters, self.last_epoch
        if t == 0:
            return [lr * s for lr in self._current_lrs()]
        if self._is_initial or t > n:
            return self._current_lrs()
        return [lr * (1.0 + (e - s) / (n * s + (t - 1) * (e - s))) for lr in self._current_lrs()]

    def _get_closed_form_lr(self):
        s, e, n = self.start_factor, self.end_factor, self.total_iters
        return [b * (s + (e - s) * min(n, self.last_epoch) / n) for b in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]`` (restarted at 0), ...

    ``SequentialLR(opt, [LinearLR(opt, 0.1, total_iters=5), CosineAnnealingLR(opt, 55)],
    milestones=[5])`` is a 5-step warm-up followed by a cosine decay. The schedulers must
    be built on the same optimizer; PyTorch's bookkeeping (undo their construction steps,
    restart the next one with its closed form at each milestone) is reproduced exactly.

    Args:
        optimizer: The [Optimizer][tinymbv2.optim.optimizer.Optimizer] every scheduler writes.
        schedulers: The schedulers, in order, built on ``optimizer``.
        milestones: The steps at which the next scheduler takes over, increasing, one fewer
            than the schedulers.
        last_epoch: The step reached, to resume (-1: a new one).

    Raises:
        TypeError: ``optimizer`` is not an Optimizer, or a scheduler is not an LRScheduler.
        ValueError: No scheduler, one built on another optimizer, or milestones of the wrong
            number or order.
    """

    defining = ("_milestones",)

    def __init__(self, optimizer, schedulers, milestones, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"SequentialLR: expected an Optimizer, got {type(optimizer).__name__}")
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("SequentialLR: expected at least one scheduler, got none")
        for i, s in enumerate(schedulers):
            if not isinstance(s, LRScheduler):
                raise TypeError(f"SequentialLR: schedulers[{i}] is a {type(s).__name__}, "
                                f"not an LRScheduler")
            if s.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: schedulers[{i}] ({type(s).__name__}) belongs "
                                 f"to a different optimizer")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR: expected {len(schedulers) - 1} milestones for {len(schedulers)} "
                f"schedulers, got {len(milestones)}"
            )
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"SequentialLR: milestones must increase, got {milestones}")
        self._schedulers, self._milestones = schedulers, milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for s in schedulers:  # undo the step each made when it was built
            s.last_epoch -= 1
        idx = bisect_right(milestones, 0)
        schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].get_last_lr()

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict:
        out = {"kind": type(self).__name__,
               **{k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}}
        out["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        state = checked_state(self, state_dict)
        subs = state.pop("_schedulers", None)
        checked = []
        if subs is not None:  # every part checked before anything is loaded
            if not isinstance(subs, list) or len(subs) != len(self._schedulers):
                got = f"{len(subs)}" if isinstance(subs, list) else f"a {type(subs).__name__}"
                raise ValueError(f"SequentialLR.load_state_dict: expected the states of "
                                 f"{len(self._schedulers)} schedulers, got {got}")
            checked = [checked_state(s, sd) for s, sd in zip(self._schedulers, subs)]
        self.__dict__.update(state)
        for s, sub in zip(self._schedulers, checked):
            s.__dict__.update(sub)


class OneCycleLR(LRScheduler):
    r"""Smith's 1cycle policy, stepped once per *batch*: warm up to ``max_lr``, then anneal.

    The lr ends far below where it started.

    Phase 1 (steps 0 to ``pct_start * total_steps - 1``) goes from ``max_lr / div_factor``
    up to ``max_lr``; phase 2 (to step ``total_steps - 1``) goes down to
    ``max_lr / div_factor / final_div_factor``; each phase follows
    $\text{end} + (\text{start} - \text{end}) \frac{1 + \cos(\pi \cdot \text{pct})}{2}$
    (``"cos"``) or a straight line (``"linear"``). Like PyTorch, when the optimizer has a
    ``momentum`` (SGD, RMSprop) or ``betas`` (Adam) option and ``cycle_momentum`` is True,
    momentum moves the opposite way, from ``max_momentum`` down to ``base_momentum`` and
    back. Stepping more than ``total_steps`` times raises ``ValueError``. (``three_phase`` is
    not implemented.)

    Args:
        optimizer: The [Optimizer][tinymbv2.optim.optimizer.Optimizer] whose groups' ``lr``
            (and momentum) it writes.
        max_lr: The peak lr, one number or one per parameter group.
        total_steps: The steps of the whole cycle, an int >= 1.
        pct_start: The fraction of the steps spent warming up, a float in [0, 1].
        anneal_strategy: ``"cos"`` or ``"linear"``.
        cycle_momentum: Move the momentum (or Adam's $\beta_1$) against the lr.
        base_momentum: The momentum at the lr's peak, in [0, 1) (one number or one per group).
        max_momentum: The momentum at the start and the end, in [0, 1).
        div_factor: The start lr is ``max_lr / div_factor``.
        final_div_factor: The final lr is the start lr divided by this.
        last_epoch: The step reached, to resume (-1: a new one).

    Raises:
        TypeError: ``optimizer`` is not an Optimizer.
        ValueError: An option out of its range, or ``cycle_momentum`` with an optimizer
            that has no momentum.
    """

    defining = ("pct_start", "anneal_strategy", "cycle_momentum")  # total_steps may change

    def __init__(self, optimizer, max_lr, total_steps: int, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float = 0.85, max_momentum: float = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"OneCycleLR: expected an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        _check_int("OneCycleLR", "total_steps", total_steps)
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must be a float in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', "
                             f"got {anneal_strategy!r}")
        check_hyper("OneCycleLR", "div_factor", div_factor)
        check_hyper("OneCycleLR", "final_div_factor", final_div_factor)
        self.anneal_strategy, self.pct_start = anneal_strategy, pct_start
        self._plan(total_steps)
        groups = optimizer.param_groups
        max_lrs = self._per_group("max_lr", max_lr)
        if last_epoch == -1:
            for group, m in zip(groups, max_lrs):
                check_hyper("OneCycleLR", "max_lr", m)
                group["initial_lr"] = m / div_factor
                group["max_lr"] = m
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(f"OneCycleLR: cycle_momentum=True needs an optimizer with a "
                                 f"momentum or betas option, {type(optimizer).__name__} has neither")
            self.use_beta1 = "betas" in optimizer.defaults
            if last_epoch == -1:
                for group, hi, lo in zip(groups, self._per_group("max_momentum", max_momentum),
                                         self._per_group("base_momentum", base_momentum)):
                    for key, value in (("max_momentum", hi), ("base_momentum", lo)):
                        check_hyper("OneCycleLR", key, value, 0.0, 1.0, high_open=True)
                    if self.use_beta1:
                        group["betas"] = (hi, *group["betas"][1:])
                    else:
                        group["momentum"] = hi
                    group["max_momentum"], group["base_momentum"] = hi, lo
        super().__init__(optimizer, last_epoch)

    def planned_steps(self) -> int:
        """``total_steps``: warm-up and annealing together."""
        return self.total_steps

    def replan(self, total_steps: int) -> None:
        """Stretch (or shorten) the cycle to ``total_steps``, keeping its shape and the steps taken.

        The warm-up stays the same fraction ``pct_start`` of the whole; the lr and momentum
        jump to the new cycle's values at the step reached, and follow it from there, exactly as
        a cycle built for ``total_steps`` would.

        Args:
            total_steps: The new length of the cycle.
        """
        _check_int("OneCycleLR", "total_steps", total_steps, low=max(1, self.last_epoch))
        self._plan(total_steps)
        self._update_lr(self.last_epoch)

    def _plan(self, total_steps: int) -> None:
        """The two phases over ``total_steps``: where each ends, and the group options it
        anneals between (lr, then momentum). From ``pct_start`` as given, never from a
        boundary placed before: ``(31.7 + 1) / 109 * 110 - 1`` is 31.999999999999993, not
        32.0, and step 32 would fall into the other phase."""
        self.total_steps = total_steps
        self._phases = [
            (float(self.pct_start * total_steps) - 1, "initial_lr", "max_lr",
             "max_momentum", "base_momentum"),
            (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
        ]

    def _per_group(self, name, value):
        n = len(self.optimizer.param_groups)
        if isinstance(value, (list, tuple)):
            if len(value) != n:
                raise ValueError(f"OneCycleLR: {name} has {len(value)} values for {n} param groups")
            return list(value)
        return [value] * n

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {t} times, but total_steps is {self.total_steps}")
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, (end_step, lr0, lr1, m0, m1) in enumerate(self._phases):
                if t <= end_step or i == len(self._phases) - 1:
                    pct = (t - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[lr0], group[lr1], pct))
                    if self.cycle_momentum:
                        mom = self._anneal(group[m0], group[m1], pct)
                        if self.use_beta1:
                            group["betas"] = (mom, *group["betas"][1:])
                        else:
                            group["momentum"] = mom
                    break
                start_step = end_step
        return lrs
