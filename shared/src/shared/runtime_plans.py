"""Runtime plans (numerics + compiler) per model version and hardware class, torch-free.

The worker runs the fastest plan that passed the accuracy guard for its hardware class
and falls back to fp32 eager otherwise. The API shows the stored reports; both meet here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

FP32 = "fp32"
BF16_CL = "bf16+channels_last"
FP16_CUDA = "fp16+channels_last"
COMPILE_FP32 = "compile+fp32"
COMPILE_BF16 = "compile+bf16+channels_last"
CUDA_GRAPHS_FP16 = "compile+fp16+cudagraphs"

# Plans worth guarding per hardware family; fp32 eager is always the reference. Compiled
# CPU plans are opt-in (with_compile): 12-23 s of compilation per batch shape per process.
CPU_BF16_PLANS = (BF16_CL,)
CPU_COMPILE_PLANS = (COMPILE_FP32,)
CPU_BF16_COMPILE_PLANS = (COMPILE_BF16,)
CUDA_PLANS = (BF16_CL, FP16_CUDA, CUDA_GRAPHS_FP16)


class GuardTolerance(BaseModel):
    """What "passes" means (issue 14): vs fp32 on the version's validation data."""

    max_auroc_delta: float = 0.002
    max_probability_delta: float = 0.01
    min_label_agreement: float = 0.995


class PlanReport(BaseModel):
    plan: str
    passed: bool
    reason: str = ""
    images: int = 0
    auroc_fp32: float | None = None
    auroc: float | None = None
    auroc_delta: float | None = None
    max_probability_delta: float | None = None
    label_agreement: float | None = None
    fp32_ms_per_batch: float | None = None
    ms_per_batch: float | None = None
    speedup: float | None = None


class HardwarePlans(BaseModel):
    """One guard run on one hardware class: every candidate's numbers and the choice."""

    hardware: str
    chosen: str = FP32
    speedup: float = 1.0
    batch_size: int
    calibration: str
    tolerance: GuardTolerance = Field(default_factory=GuardTolerance)
    reports: list[PlanReport]
    guarded_at: str


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags of this machine (empty where /proc/cpuinfo is missing)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_hardware_class(flags: set[str]) -> str:
    """Plans are guarded per class: bf16 results differ between AMX, AVX-512 BF16 and emulation."""
    if {"amx_bf16", "amx_tile"} <= flags:
        return "cpu-amx"
    if "avx512_bf16" in flags:
        return "cpu-avx512_bf16"
    if "avx512f" in flags:
        return "cpu-avx512"
    return "cpu"


def cpu_candidates(hardware: str, *, with_compile: bool = False) -> tuple[str, ...]:
    """Candidate plans for a CPU class; bf16 only where the CPU does it natively."""
    native_bf16 = hardware in ("cpu-amx", "cpu-avx512_bf16")
    plans: tuple[str, ...] = CPU_BF16_PLANS if native_bf16 else ()
    if with_compile:
        plans += CPU_COMPILE_PLANS + (CPU_BF16_COMPILE_PLANS if native_bf16 else ())
    return plans


def cuda_hardware_class(device_name: str) -> str:
    return "cuda-" + "_".join(device_name.lower().split())


def choose(reports: list[PlanReport]) -> tuple[str, float]:
    """The fastest plan that passed; fp32 (speed-up 1) when none did or none is faster."""
    best, speedup = FP32, 1.0
    for r in reports:
        if r.passed and r.speedup is not None and r.speedup > speedup:
            best, speedup = r.plan, r.speedup
    return best, speedup


def plan_for(runtime_plans: dict[str, Any] | None, hardware: str) -> str:
    """The plan a worker of ``hardware`` may run: re-checked against the stored reports,
    so a plan recorded as chosen but not passed is never used."""
    entry = (runtime_plans or {}).get(hardware)
    if not entry:
        return FP32
    stored = HardwarePlans.model_validate(entry)
    passed = {r.plan for r in stored.reports if r.passed}
    return stored.chosen if stored.chosen in passed else FP32
