"""The accuracy guard: each candidate plan against fp32 eager on the version's validation data.

A plan passes when, on every calibration image, its probabilities match fp32's within the
tolerance (shared.runtime_plans.GuardTolerance): AUROC change, largest probability move,
label agreement at the card's operating point. Speed is paired: fp32 and the plan run
in interleaved rounds and the speed-up is the median of the per-round ratios.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from shared import runtime_plans as rp
from shared.operating_points import operating_point
from worker.inference import plans
from worker.inference.runner import LoadedModel


def load_calibration(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(data)) as npz:
        return npz["images"], npz["labels"].reshape(-1)


def _probabilities(forward: plans.Forward, batches: Sequence[torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([torch.softmax(forward(b), dim=1).numpy() for b in batches])


def _ms_per_batch(forward: plans.Forward, batch: torch.Tensor, reps: int) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(reps):
            forward(batch)
    return (time.perf_counter() - start) * 1000 / reps


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None


def evaluate_plan(
    model: LoadedModel,
    plan: str,
    batches: Sequence[torch.Tensor],
    labels: np.ndarray,
    reference: np.ndarray,
    tolerance: rp.GuardTolerance,
    rounds: int = 3,
) -> rp.PlanReport:
    """One candidate's numbers against the fp32 ``reference`` probabilities."""
    try:
        forward = plans.build_forward(model.network, plan, model.device)
        probs = _probabilities(forward, batches)
    except Exception as exc:  # a plan this host cannot run (no compiler, no kernel) fails
        return rp.PlanReport(plan=plan, passed=False, reason=f"could not run: {exc}"[:300])
    positive = model.card.labels.index(model.card.positive_label or model.card.labels[-1])
    point = operating_point(model.card)
    threshold = point.threshold if point is not None else 0.5
    agree = float(
        np.mean((reference[:, positive] >= threshold) == (probs[:, positive] >= threshold))
    )
    max_delta = float(np.max(np.abs(reference - probs)))
    auroc_ref, auroc = _auroc(labels, reference[:, positive]), _auroc(labels, probs[:, positive])
    auroc_delta = abs(auroc - auroc_ref) if auroc is not None and auroc_ref is not None else 0.0
    ratios, ref_ms, plan_ms = [], [], []
    for _ in range(rounds):  # interleaved, so load on a shared box hits both alike
        ref_ms.append(_ms_per_batch(model.network, batches[0], 3))
        plan_ms.append(_ms_per_batch(forward, batches[0], 3))
        ratios.append(ref_ms[-1] / plan_ms[-1])
    failures = []
    if auroc_delta > tolerance.max_auroc_delta:
        failures.append(f"AUROC moved {auroc_delta:.4f}")
    if max_delta > tolerance.max_probability_delta:
        failures.append(f"a probability moved {max_delta:.4f}")
    if agree < tolerance.min_label_agreement:
        failures.append(f"labels agree on {agree:.2%}")
    return rp.PlanReport(
        plan=plan, passed=not failures, reason="; ".join(failures), images=len(labels),
        auroc_fp32=auroc_ref, auroc=auroc, auroc_delta=auroc_delta,
        max_probability_delta=max_delta, label_agreement=agree,
        fp32_ms_per_batch=statistics.median(ref_ms), ms_per_batch=statistics.median(plan_ms),
        speedup=statistics.median(ratios),
    )  # fmt: skip


def guard(
    model: LoadedModel,
    calibration: bytes,
    *,
    batch_size: int,
    calibration_name: str,
    candidates: Sequence[str] | None = None,
    tolerance: rp.GuardTolerance | None = None,
) -> rp.HardwarePlans:
    """Every candidate plan for this host, measured; the fastest that passed is chosen."""
    tolerance = tolerance or rp.GuardTolerance()
    images, labels = load_calibration(calibration)
    # Same input as the worker's decoder gives the preset: float [0, 1], HxW or HxWx3.
    tensors = [model.preset(img.astype(np.float32) / 255.0) for img in images]
    batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
    reference = _probabilities(model.network, batches)
    names = plans.candidates(model.device) if candidates is None else candidates
    reports = [evaluate_plan(model, p, batches, labels, reference, tolerance) for p in names]
    chosen, speedup = rp.choose(reports)
    return rp.HardwarePlans(
        hardware=plans.hardware_class(), chosen=chosen, speedup=speedup, batch_size=batch_size,
        calibration=calibration_name, tolerance=tolerance, reports=reports,
        guarded_at=datetime.now(UTC).isoformat(),
    )  # fmt: skip
