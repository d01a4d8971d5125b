"""Runtime plans: how a classifier's forward pass runs (precision, memory format, compiler).

fp32 eager is the reference. Other plans are only used after the accuracy guard
(worker.inference.guard) passed them for this model on this hardware class; the choice
is re-checked from the stored reports at load (shared.runtime_plans.plan_for).
Compilation and warm-up happen here, at model load, never inside a request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import nn

from shared import runtime_plans as rp

log = logging.getLogger(__name__)
Forward = Callable[[torch.Tensor], torch.Tensor]


@lru_cache(maxsize=1)
def hardware_class() -> str:
    """This process's hardware class: the GPU's name on CUDA, else the CPU's bf16 flags."""
    if torch.cuda.is_available():
        return rp.cuda_hardware_class(torch.cuda.get_device_name(0))
    return rp.cpu_hardware_class(rp.cpu_flags())


def candidates(device: torch.device) -> tuple[str, ...]:
    if device.type == "cuda":
        return rp.CUDA_PLANS
    return rp.cpu_candidates(hardware_class())


def _dtype(plan: str) -> torch.dtype | None:
    if "bf16" in plan:
        return torch.bfloat16
    if "fp16" in plan:
        return torch.float16
    return None


def build_forward(network: nn.Module, plan: str, device: torch.device) -> Forward:
    """A logits function for ``plan``. The network is left untouched for fp32 eager."""
    if plan == rp.FP32:
        return network
    dtype = _dtype(plan)
    channels_last = "channels_last" in plan
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    body: Callable[[torch.Tensor], torch.Tensor] = network
    if plan.startswith("compile"):
        # Freezing folds weights and batch norm into constants (PERF_BASELINES: without
        # it batch 1 got slower); CUDA graphs replay whole launches on the GPU.
        mode = "reduce-overhead" if "cudagraphs" in plan else None
        torch._inductor.config.freezing = True
        body = torch.compile(network, mode=mode, dynamic=False)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        ctx = (
            torch.autocast(device.type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            return body(batch).float()

    return forward


@torch.inference_mode()
def warm_up(
    forward: Forward, shape: tuple[int, ...], device: torch.device, batches: list[int]
) -> None:
    """Run every batch size once so compilation and allocator growth happen now."""
    for n in batches:
        forward(torch.zeros((n, *shape), device=device))
