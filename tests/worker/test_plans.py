"""Runtime plans and the accuracy guard on the bundled model and its real calibration set."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import torch

from shared import runtime_plans as rp
from shared.ml.architectures import build_classifier, load_state_dict
from shared.ml.presets import ClassificationPresetEval
from shared.schemas.models import ModelCard
from worker.inference import plans
from worker.inference.guard import guard
from worker.inference.runner import LoadedModel

BUNDLED = Path(__file__).resolve().parents[2] / "models" / "pneumonia-resnet18"


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    card = ModelCard.model_validate(json.loads((BUNDLED / "card.json").read_text()))
    net = build_classifier(card.architecture, len(card.labels))
    net.load_state_dict(load_state_dict(str(BUNDLED / "weights.pt")))
    net.eval()
    preset = ClassificationPresetEval(card.input)
    return LoadedModel(uuid.uuid4(), "pneumonia-resnet18:1", card, net, preset, torch.device("cpu"))


def test_bf16_plan_is_guarded_against_fp32_on_real_validation_images(model: LoadedModel) -> None:
    data = (BUNDLED / "calibration.npz").read_bytes()
    result = guard(model, data, batch_size=8, calibration_name="val", candidates=[rp.BF16_CL])
    (report,) = result.reports
    assert report.images == 524
    assert report.auroc_fp32 is not None and report.auroc_fp32 > 0.9  # a trained model
    assert report.max_probability_delta is not None and report.max_probability_delta > 0
    assert report.speedup is not None and report.speedup > 0
    tol = rp.GuardTolerance()
    expected = (
        report.auroc_delta <= tol.max_auroc_delta
        and report.max_probability_delta <= tol.max_probability_delta
        and report.label_agreement >= tol.min_label_agreement
    )
    assert report.passed == expected
    assert result.chosen == (rp.BF16_CL if expected and report.speedup > 1 else rp.FP32)


def test_a_failing_plan_is_never_used(model: LoadedModel) -> None:
    data = (BUNDLED / "calibration.npz").read_bytes()
    strict = rp.GuardTolerance(max_probability_delta=0.0)  # bf16 always moves something
    result = guard(
        model, data, batch_size=8, calibration_name="val", candidates=[rp.BF16_CL],
        tolerance=strict,
    )  # fmt: skip
    assert not result.reports[0].passed and "probability moved" in result.reports[0].reason
    assert result.chosen == rp.FP32
    stored = {result.hardware: result.model_dump(mode="json")}
    assert rp.plan_for(stored, result.hardware) == rp.FP32
    # Even a record that names the failed plan as chosen does not get it used.
    forged = {result.hardware: {**stored[result.hardware], "chosen": rp.BF16_CL}}
    assert rp.plan_for(forged, result.hardware) == rp.FP32
    assert rp.plan_for(None, result.hardware) == rp.FP32


def test_hardware_class_from_cpu_flags() -> None:
    assert rp.cpu_hardware_class({"avx512f", "avx512_bf16"}) == "cpu-avx512_bf16"
    assert rp.cpu_hardware_class({"amx_bf16", "amx_tile", "avx512_bf16"}) == "cpu-amx"
    assert rp.cpu_hardware_class({"sse2"}) == "cpu"
    assert rp.BF16_CL not in rp.cpu_candidates("cpu")
    assert plans.hardware_class().startswith(("cpu", "cuda-"))
