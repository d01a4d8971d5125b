"""The segmentation LR schedule: warm-up, cosine by steps or time budget, stop, resume."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from trainer.segmentation.schedule import (
    MIN_FACTOR,
    WARMUP_FRACTION,
    ProgressSchedule,
    train_within,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _optimizer(lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _lr(opt: torch.optim.Optimizer) -> float:
    return float(opt.param_groups[0]["lr"])


def test_warm_up_then_cosine_to_the_floor_by_steps() -> None:
    opt = _optimizer()
    sched = ProgressSchedule(opt, total_steps=100, budget_s=None, clock=Clock())
    assert _lr(opt) == pytest.approx(1e-3 * MIN_FACTOR)  # step 0: not the full rate
    rates = []
    for _ in range(100):
        sched.step_batch()
        rates.append(_lr(opt))
    peak = int(100 * WARMUP_FRACTION)
    assert rates[peak - 1] == pytest.approx(1e-3)  # end of warm-up: the base rate
    assert all(a < b for a, b in zip(rates[: peak - 1], rates[1:peak], strict=True))
    assert all(a >= b for a, b in zip(rates[peak - 1 : -1], rates[peak:], strict=True))
    cosine = 0.5 * (1 + math.cos(math.pi * (0.6 - WARMUP_FRACTION) / (1 - WARMUP_FRACTION)))
    assert rates[59] == pytest.approx(1e-3 * (MIN_FACTOR + (1 - MIN_FACTOR) * cosine))
    assert rates[-1] == pytest.approx(1e-3 * MIN_FACTOR)
    assert sched.exhausted()
    sched.step()  # the fit loop's per-epoch call changes nothing
    assert _lr(opt) == pytest.approx(1e-3 * MIN_FACTOR)


def test_a_time_budget_anneals_and_stops_before_the_planned_steps() -> None:
    clock, opt = Clock(), _optimizer()
    sched = ProgressSchedule(opt, total_steps=10_000, budget_s=600, clock=clock)
    for _ in range(10):
        clock.now += 30  # 30 s per step: the 600 s budget lasts 20 steps, not 10,000
        sched.step_batch()
    assert sched.progress == pytest.approx(0.5)
    expected = MIN_FACTOR + (1 - MIN_FACTOR) * 0.5 * (
        1 + math.cos(math.pi * (0.5 - WARMUP_FRACTION) / (1 - WARMUP_FRACTION))
    )
    assert _lr(opt) == pytest.approx(1e-3 * expected)
    assert not sched.exhausted()
    clock.now += 301
    assert sched.exhausted()


def test_resume_continues_the_curve_with_the_time_already_spent() -> None:
    clock, opt = Clock(), _optimizer()
    sched = ProgressSchedule(opt, total_steps=1000, budget_s=1000, clock=clock)
    for _ in range(40):
        clock.now += 10
        sched.step_batch()
    saved, rate = sched.state_dict(), _lr(opt)
    clock.now += 5000  # the trainer was down: that time does not count
    opt2 = _optimizer()
    resumed = ProgressSchedule(opt2, total_steps=1000, budget_s=1000, clock=clock)
    resumed.load_state_dict(saved)
    assert resumed.steps == 40 and resumed.progress == pytest.approx(0.4)
    assert _lr(opt2) == pytest.approx(rate)


def test_a_pass_ends_at_the_step_that_spends_the_budget() -> None:
    clock, opt = Clock(), _optimizer()
    sched = ProgressSchedule(opt, total_steps=10_000, budget_s=100, clock=clock)
    seen: list[int] = []

    def run_pass(hook: Callable[[int, float], None]) -> float:
        for step in range(1, 29):  # a 28-step epoch at 30 s per step
            clock.now += 30
            hook(step, float(step))
        return -1.0  # the full pass's own mean: not reached

    mean = train_within(sched, run_pass, lambda step, loss: seen.append(step))
    assert seen == [1, 2, 3, 4]  # 120 s >= 100 s: stopped after the 4th step, not the 28th
    assert mean == pytest.approx(2.5) and sched.exhausted() and sched.steps == 4


def test_a_pass_within_the_budget_runs_to_its_end() -> None:
    sched = ProgressSchedule(_optimizer(), total_steps=100, budget_s=None, clock=Clock())
    mean = train_within(
        sched, lambda hook: [hook(s, 1.0) for s in (1, 2, 3)] and 0.5, lambda s, x: None
    )
    assert mean == 0.5 and sched.steps == 3 and not sched.exhausted()
