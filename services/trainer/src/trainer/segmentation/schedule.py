"""Learning rate over the run's progress: linear warm-up, then cosine to zero.

Progress is the larger of two fractions: optimiser steps taken of the planned steps, and wall
time spent of the time budget (when there is one). The rate therefore anneals to zero by
whichever limit comes first — a schedule cut short by a deadline while its rate is still high
wastes the run (Li, Yumer and Ramanan, "Budgeted training", ICLR 2020) — and the run stops
once progress reaches 1. Without a budget the schedule depends on steps alone and is
reproducible; with one it follows the machine's speed, which on a shared CPU varies.

Stepped after every optimiser step (the fit loop's per-epoch ``step()`` is a no-op) and
checkpointed with the steps taken and the time spent, so a resumed job continues the curve.
A pass run through `train_within` ends at the step that exhausts the schedule, so a slow
machine overruns its budget by one step, not by an epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

WARMUP_FRACTION = 0.05  # of progress: the fresh decoder's first gradients are large
MIN_FACTOR = 0.01  # of the base rate at the end of the cosine


class ProgressSchedule:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        budget_s: float | None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.optimizer, self.total_steps, self.budget_s = optimizer, max(1, total_steps), budget_s
        self.clock = clock
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.steps = 0
        self._spent_before = 0.0  # seconds spent in earlier attempts (restored on resume)
        self._started = clock()
        self._apply()

    @property
    def seconds(self) -> float:
        return self._spent_before + self.clock() - self._started

    @property
    def progress(self) -> float:
        by_steps = self.steps / self.total_steps
        by_time = self.seconds / self.budget_s if self.budget_s else 0.0
        return max(by_steps, by_time)

    def factor(self) -> float:
        p = min(1.0, self.progress)
        if p < WARMUP_FRACTION:
            return max(MIN_FACTOR, p / WARMUP_FRACTION)
        cosine = 0.5 * (1 + math.cos(math.pi * (p - WARMUP_FRACTION) / (1 - WARMUP_FRACTION)))
        return MIN_FACTOR + (1 - MIN_FACTOR) * cosine

    def _apply(self) -> None:
        f = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * f

    def step_batch(self) -> None:
        """After an optimiser step: count it and set the rate for the next one."""
        self.steps += 1
        self._apply()

    def step(self) -> None:
        """Called by the fit loop once per epoch; the rate already moves per batch."""

    def exhausted(self) -> bool:
        """True once the planned steps are taken or the time budget is spent."""
        return self.progress >= 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seconds": self.seconds, "base_lrs": self.base_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.base_lrs = int(state["steps"]), [float(v) for v in state["base_lrs"]]
        self._spent_before, self._started = float(state["seconds"]), self.clock()
        self._apply()

    def describe(self) -> str:
        budget = f" or {self.budget_s:g} s of wall time" if self.budget_s else ""
        return (
            f"AdamW; linear warm-up over the first {WARMUP_FRACTION:.0%} of progress, then "
            f"cosine to {MIN_FACTOR:g}x over {self.total_steps} optimiser steps{budget}, "
            "whichever comes first (stepped per batch)"
        )


class _Exhausted(Exception):
    """Raised from the step hook to end a training pass once the schedule is exhausted."""


def train_within(
    schedule: ProgressSchedule,
    run_pass: Callable[[Callable[[int, float], None]], float],
    on_step: Callable[[int, float], None],
) -> float:
    """One training pass stepping ``schedule`` per batch; ends early once it is exhausted.

    Args:
        run_pass: runs the pass with a per-step hook ``(1-based step, loss)``; returns the
            pass's mean loss.
        on_step: the caller's hook (progress, cancellation), called after every step.

    Returns:
        The pass's mean loss, or the mean of the steps taken when it ended early.
    """
    losses: list[float] = []

    def stepped(step: int, loss: float) -> None:
        losses.append(loss)
        schedule.step_batch()
        on_step(step, loss)
        if schedule.exhausted():
            raise _Exhausted

    try:
        return run_pass(stepped)
    except _Exhausted:
        return sum(losses) / len(losses)
