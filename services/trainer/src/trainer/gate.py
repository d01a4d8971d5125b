"""trainer.evaluate_challenger: the champion/challenger gate on a line's locked test set.

Both versions are loaded exactly as the inference worker loads them and score the same
locked test images; the paired difference's interval comes from the trainer's own
percentile bootstrap (`classification_scores.bootstrap_ci`) over the stacked scores, so
each resample draws the same images for both. The rule itself is
`shared.learning.gate_rule`; the decision is applied by `shared.learning.generations`.
"""

from __future__ import annotations

import logging
import uuid

import numpy as np
import torch
from celery import Task
from sqlalchemy.exc import OperationalError
from torch.utils.data import DataLoader

from shared.db.learning_models import GenerationStatus, ModelGeneration, ModelLine
from shared.db.models import ModelVersion
from shared.learning import generations
from shared.learning.gate_rule import GateReport
from shared.learning.lines import locked_set
from shared.ml.architectures import build_classifier, load_state_dict
from shared.ml.detection import DEFAULT_SCORE_THRESHOLD, build_detector, load_detector_state
from shared.ml.presets import ClassificationPresetEval
from shared.registry import PRODUCTION, alias_target
from shared.schemas.learning import RetrainingPolicy
from shared.schemas.models import ModelCard
from shared.tasks import TaskName
from trainer.celery_app import app
from trainer.context import TrainerContext, get_context, pick_device
from trainer.detection.data import (
    DetectionDataset,
    DetectionItem,
    DetectionPresetEvalBoxes,
    collate,
)
from trainer.detection.engine import predict
from trainer.engine import evaluate
from trainer.gate_stats import Detections, Scored, compare, compare_detection
from trainer.items import ItemRef, ItemsClassification, load_items

log = logging.getLogger(__name__)


def _score(
    ctx: TrainerContext, version: ModelVersion, items: list[ItemRef]
) -> tuple[Scored, np.ndarray]:
    if version.kind != "single" or version.model.task != "classification":
        raise ValueError(
            f"{version.ref}: the gate compares single classification or detection models"
        )
    card = ModelCard.model_validate(version.card)
    network = build_classifier(version.architecture, len(version.labels))
    network.load_state_dict(load_state_dict(str(ctx.store.path(version.weights_key))))
    device = pick_device()
    spec = card.input
    ds = ItemsClassification(
        ctx.store,
        items,
        list(version.labels),
        ClassificationPresetEval(spec),
        max_pixels=ctx.settings.max_image_pixels,
        decode_size=spec.native_size or spec.size,
    )
    out = evaluate(network.to(device), DataLoader(ds, 64), device)
    op = card.operating_point
    return Scored(version.ref, out.probs, op.threshold if op else 0.5), out.labels


def _detect(
    ctx: TrainerContext, version: ModelVersion, items: list[ItemRef]
) -> tuple[Detections, Detections]:
    """Per-image predictions (as a default request filters them) and true boxes, on CPU."""
    if version.kind != "single":
        raise ValueError(f"{version.ref}: the gate compares single models")
    card = ModelCard.model_validate(version.card)
    labels = list(version.labels)
    network = build_detector(version.architecture, labels, card.input)
    load_detector_state(network, load_state_dict(str(ctx.store.path(version.weights_key))))
    device = pick_device()
    network.to(device).eval()
    refs = [DetectionItem(ctx.store.path(r.storage_key), list(r.boxes or []), r.width, r.height)
            for r in items]  # fmt: skip
    ds = DetectionDataset(refs, labels, DetectionPresetEvalBoxes(card.input.size, card.input.mean))
    preds: Detections = []
    targets: Detections = []
    with torch.inference_mode():
        for images, truth in DataLoader(ds, 4, collate_fn=collate):
            out = predict(network, [i.to(device) for i in images])
            preds += [{k: v.cpu() for k, v in o.items()} for o in out]
            targets += [{k: v.cpu() for k, v in t.items()} for t in truth]
    return preds, targets


def _report(
    ctx: TrainerContext,
    champion: ModelVersion,
    challenger: ModelVersion,
    items: list[ItemRef],
    policy: RetrainingPolicy,
) -> GateReport:
    if champion.model.task == "detection":
        if list(champion.labels) != list(challenger.labels):
            raise ValueError("champion and challenger detect different labels")
        old, targets = _detect(ctx, champion, items)
        new, _ = _detect(ctx, challenger, items)
        return compare_detection(
            (champion.ref, old), (challenger.ref, new), targets, list(challenger.labels),
            margin=policy.margin, samples=policy.bootstrap_samples,
            score_threshold=DEFAULT_SCORE_THRESHOLD,
        )  # fmt: skip
    before, labels = _score(ctx, champion, items)
    after, _ = _score(ctx, challenger, items)
    return compare(before, after, labels, margin=policy.margin, samples=policy.bootstrap_samples)


def run_gate(ctx: TrainerContext, generation_id: uuid.UUID) -> None:
    with ctx.sessions() as session:
        generation = session.get(ModelGeneration, generation_id)
        if generation is None or generation.status != GenerationStatus.EVALUATING:
            return  # a duplicate delivery: already decided
        line = session.get(ModelLine, generation.model_line_id)
        assert line is not None
        challenger = session.get(ModelVersion, generation.challenger_version_id)
        assert challenger is not None
        champion = alias_target(session, challenger.model, PRODUCTION)
        policy = RetrainingPolicy.model_validate(line.policy)
        locked = locked_set(session, line)
        items = load_items(session, line.locked_dataset_version_id)["test"]
        try:
            if champion is None:
                raise ValueError("the model has no production version to compare with")
            report = _report(ctx, champion, challenger, items, policy)
            report.test_set["sha256"] = locked.fingerprint
            failure = None
        except (ValueError, OSError) as exc:
            report, failure = None, f"the gate could not be evaluated: {exc}"
        if champion is not None:
            generation.champion_version_id = champion.id
        generations.record_gate(session, generation_id, report, failure)
        session.commit()


@app.task(  # type: ignore[untyped-decorator]
    bind=True,
    name=TaskName.EVALUATE_CHALLENGER,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=8,
)
def evaluate_challenger(self: Task, generation_id: str) -> None:
    run_gate(get_context(), uuid.UUID(generation_id))
