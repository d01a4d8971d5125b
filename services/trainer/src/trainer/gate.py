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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from celery import Task
from sqlalchemy.exc import OperationalError
from torch.utils.data import DataLoader

from shared.db.learning_models import GenerationStatus, ModelGeneration, ModelLine
from shared.db.models import ModelVersion
from shared.learning import generations
from shared.learning.gate_rule import Comparison, GateReport, decide
from shared.learning.lines import locked_set
from shared.ml.architectures import build_classifier, load_state_dict
from shared.ml.presets import ClassificationPresetEval
from shared.registry import PRODUCTION, alias_target
from shared.schemas.learning import RetrainingPolicy
from shared.schemas.models import ModelCard
from shared.tasks import TaskName
from trainer import classification_scores as M
from trainer.celery_app import app
from trainer.context import TrainerContext, get_context, pick_device
from trainer.engine import evaluate
from trainer.items import ItemRef, ItemsClassification, load_items

log = logging.getLogger(__name__)
SEED = 0


@dataclass(frozen=True)
class Scored:
    ref: str
    probs: np.ndarray  # (N, C)
    threshold: float  # the card's operating point (binary), else argmax


def _score(
    ctx: TrainerContext, version: ModelVersion, items: list[ItemRef]
) -> tuple[Scored, np.ndarray]:
    if version.kind != "single" or version.model.task != "classification":
        raise ValueError(f"{version.ref}: the gate compares single classification models")
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


def _metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(AUROC or macro AUROC, sensitivity: at the operating point, or macro recall)."""
    if probs.shape[1] == 2:
        return M.auroc(probs[:, 1], labels), M.sensitivity(probs[:, 1], labels, threshold)
    pred = probs.argmax(axis=1)
    recall = [float((pred[labels == c] == c).mean()) for c in np.unique(labels)]
    return M.macro_auroc(probs, labels), float(np.mean(recall))


def compare(
    champion: Scored, challenger: Scored, labels: np.ndarray, *, margin: float, samples: int
) -> GateReport:
    """Paired comparison on the same images; `decide` then applies the rule."""
    stacked = np.stack([champion.probs, challenger.probs], axis=1)  # (N, 2, C)
    thresholds = (champion.threshold, challenger.threshold)

    def diff(index: int) -> Callable[[np.ndarray, np.ndarray], float]:
        def metric(s: np.ndarray, y: np.ndarray) -> float:
            a = _metrics(s[:, 0], y, thresholds[0])[index]
            return _metrics(s[:, 1], y, thresholds[1])[index] - a

        return metric

    old, new = (
        _metrics(champion.probs, labels, thresholds[0]),
        _metrics(challenger.probs, labels, thresholds[1]),
    )
    binary = champion.probs.shape[1] == 2
    comparisons = []
    for index, name in enumerate(
        ("auroc" if binary else "macro_auroc", "sensitivity" if binary else "macro_recall")
    ):
        ci = M.bootstrap_ci(diff(index), stacked, labels, samples=samples, seed=SEED)
        comparisons.append(
            Comparison(
                metric=name,
                champion=round(old[index], 6),
                challenger=round(new[index], 6),
                difference=round(new[index] - old[index], 6),
                ci95=None if ci is None else [round(ci[0], 6), round(ci[1], 6)],
            )
        )
    return decide(
        GateReport(
            champion=champion.ref,
            challenger=challenger.ref,
            test_set={"images": int(len(labels)), "positives": int((labels == 1).sum())},
            margin=margin,
            discrimination=comparisons[0],
            sensitivity=comparisons[1],
            method=f"paired percentile bootstrap over locked test images, {samples} "
            f"resamples, seed {SEED}; sensitivity at each version's own operating point",
        )
    )


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
            old, labels = _score(ctx, champion, items)
            new, _ = _score(ctx, challenger, items)
            report = compare(
                old, new, labels, margin=policy.margin, samples=policy.bootstrap_samples
            )
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
