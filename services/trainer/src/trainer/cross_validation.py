"""Cross-validation jobs: k fold models, out-of-fold metrics, one soft-voting ensemble.

Train and validation images are pooled and split into k folds grouped by patient/study (no
group in two folds) and stratified by class (scikit-learn ``StratifiedGroupKFold``). Each
fold's model trains on the other k-1 folds and stops early on its own held-out fold; its
predictions there are the out-of-fold predictions, which give the interval-bearing
cross-validated metrics and the ensemble's operating point. The locked test split is touched
once, by the ensemble of the k fold models (mean probability), after every choice is made.

Resumable per fold: every checkpoint carries the fold it belongs to and the blobs of the
folds already finished, so a trainer killed in fold 3 resumes fold 3 at its next epoch.
"""

from __future__ import annotations

import copy
import io
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from shared.errors import InvalidRequest
from shared.ml.architectures import build_classifier
from shared.ml.presets import ClassificationPresetEval
from shared.model_lifecycle import build_ensemble
from shared.registry import PRODUCTION, register_version, set_alias
from shared.schemas.models import DataProvenance, InputSpec, ModelCard, TrainingRecord
from shared.schemas.training import CLASSIFICATION_LR, TrainingParams
from trainer import evaluation as E
from trainer import jobstate, tta
from trainer.card import choose_operating_point, save_weights_fp16
from trainer.context import JobSpec, TrainerContext, hardware
from trainer.fit import Cancelled, FitHooks, fit_classifier
from trainer.fit_state import FitState, checkpoint_meta, delete_checkpoint
from trainer.head_fit import Features, extract, fit_head, full_state, head_probs
from trainer.items import ItemRef, ItemsClassification
from trainer.presets import ClassificationPresetTrain
from trainer.progress import Reporter
from trainer.publish import versions_record
from trainer.reporting import curves_png
from trainer.starting_points import StartingPoint, head_name


def assign_folds(
    targets: Sequence[int] | np.ndarray, groups: Sequence[str], folds: int, seed: int
) -> np.ndarray:
    """The 0-based fold of every item: grouped (a group never spans two folds), stratified.

    Raises:
        InvalidRequest: fewer groups than folds, or no class with as many images as folds.
    """
    n_groups = len(set(groups))
    if n_groups < folds:
        raise InvalidRequest(
            f"{folds}-fold cross-validation needs at least {folds} patients/studies; "
            f"train + validation hold {n_groups}"
        )
    y = np.asarray(targets)
    largest = int(np.bincount(y).max()) if len(y) else 0
    if largest < folds:  # StratifiedGroupKFold's own refusal, as a 422 rather than a crash
        raise InvalidRequest(
            f"{folds}-fold cross-validation needs at least {folds} images of some class; "
            f"the largest class holds {largest}: use fewer folds"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of = np.full(len(targets), -1, dtype=np.int64)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y, np.asarray(groups))):
        fold_of[held] = fold
    empty = sorted(set(range(folds)) - set(fold_of.tolist()))
    if empty:
        raise InvalidRequest(
            f"{folds}-fold cross-validation left fold {empty[0] + 1} empty; use fewer folds"
        )
    return fold_of


def _group(item: ItemRef) -> str:
    # Items imported without a group pattern are their own group.
    return item.group or f"item:{item.storage_key}"


def _fp16_rounded(network: torch.nn.Module) -> None:
    """Round weights to what float16 storage keeps, so cached features match the served net."""
    with torch.no_grad():
        for tensor in network.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


@dataclass
class FoldResult:
    fold: int
    weights: dict[str, torch.Tensor]  # fp16 state dict, as served
    held: np.ndarray  # indices into the pooled train + validation items
    plain: np.ndarray  # held-out probabilities (N, C)
    flipped: np.ndarray  # of the mirrored images
    history: list[dict[str, Any]]
    best_epoch: int
    best_value: float | None

    def save(self, ctx: TrainerContext) -> str:
        buffer = io.BytesIO()
        torch.save(
            {
                "fold": self.fold,
                "weights": self.weights,
                "held": torch.from_numpy(self.held),
                "plain": torch.from_numpy(self.plain),
                "flipped": torch.from_numpy(self.flipped),
                "history": self.history,
                "best_epoch": self.best_epoch,
                "best_value": self.best_value,
            },
            buffer,
        )
        return ctx.store.put(buffer.getvalue(), prefix="checkpoints", suffix=".pt")[0]

    @classmethod
    def load(cls, ctx: TrainerContext, key: str) -> FoldResult:
        p = torch.load(io.BytesIO(ctx.store.get(key)), map_location="cpu", weights_only=True)
        return cls(
            fold=int(p["fold"]),
            weights=p["weights"],
            held=p["held"].numpy(),
            plain=p["plain"].numpy(),
            flipped=p["flipped"].numpy(),
            history=p["history"],
            best_epoch=int(p["best_epoch"]),
            best_value=p["best_value"],
        )


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


@dataclass
class CvRun:
    """Everything the folds share: the job, its data, the starting network, the input spec."""

    ctx: TrainerContext
    job: JobSpec
    reporter: Reporter
    params: TrainingParams
    labels: list[str]
    dev: list[ItemRef]
    test: list[ItemRef]
    start: StartingPoint
    spec: InputSpec
    device: torch.device

    def dataset(self, items: Sequence[ItemRef], transform: Any) -> ItemsClassification:
        return ItemsClassification(
            self.ctx.store,
            items,
            self.labels,
            transform,
            max_pixels=self.ctx.settings.max_image_pixels,
            decode_size=self.params.image_size,
        )

    def hooks(self) -> FitHooks:
        return FitHooks(on_step=self.reporter.on_step, on_epoch=self.reporter.on_epoch)


def _fold_full(
    run: CvRun, fold: int, train: np.ndarray, held: np.ndarray, resume: str | None, meta: Any
) -> FoldResult:
    """Full fine-tuning of one fold: the network trains on augmented images."""
    p, eval_tf = run.params, ClassificationPresetEval(run.spec)
    train_ds = run.dataset(
        [run.dev[i] for i in train], ClassificationPresetTrain(run.spec, hflip_prob=p.hflip_prob)
    )
    held_ds = run.dataset([run.dev[i] for i in held], eval_tf)
    network = copy.deepcopy(run.start.network).to(run.device)
    state = fit_classifier(
        network, train_ds, held_ds, params=p, monitor=run.job.monitor, device=run.device,
        store=run.ctx.store, resume_key=resume, hooks=run.hooks(), meta=meta,
    )  # fmt: skip
    assert state.best_state is not None
    weights = _half(state.best_state)
    served = build_classifier(run.job.architecture, len(run.labels))
    served.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    served.to(run.device)
    plain = tta.predict(served, held_ds, run.device)
    flipped = tta.predict(served, held_ds, run.device, hflip=True)
    return FoldResult(
        fold, weights, held, plain, flipped, state.history, state.best_epoch, state.best_value
    )


def _fold_head(
    run: CvRun,
    features: Features,
    fold: int,
    train: np.ndarray,
    held: np.ndarray,
    resume: str | None,
    meta: Any,
) -> FoldResult:
    """Head-only fine-tuning of one fold on the cached backbone features."""
    counts = np.bincount(features.labels[train].numpy(), minlength=len(run.labels)).tolist()
    state: FitState = fit_head(
        run.start.network, features.subset(train), features.subset(held),
        class_counts=[int(c) for c in counts], params=run.params, monitor=run.job.monitor,
        store=run.ctx.store, resume_key=resume, hooks=run.hooks(), meta=meta,
    )  # fmt: skip
    assert state.best_state is not None
    head = {k: v.half().float() for k, v in state.best_state.items()}
    weights = _half(full_state(run.start.network, head))
    i = torch.as_tensor(held, dtype=torch.long)
    plain = head_probs(head, features.plain[i])
    flipped = head_probs(head, features.flipped[i])
    return FoldResult(
        fold, weights, held, plain, flipped, state.history, state.best_epoch, state.best_value
    )


def _test_probs(run: CvRun, results: list[FoldResult], choices: list[str]) -> np.ndarray:
    """The ensemble's test probabilities: the mean of the members', each with its own TTA."""
    eval_tf = ClassificationPresetEval(run.spec)
    test_ds = run.dataset(run.test, eval_tf)
    if run.params.finetune == "head":
        feats = extract(run.start.network, test_ds, run.device, on_batch=run.reporter.features)
        name = head_name(run.start.network)
        per = []
        for r, c in zip(results, choices, strict=True):
            head = _head(r, name)
            plain, flipped = head_probs(head, feats.plain), head_probs(head, feats.flipped)
            per.append(tta.apply(c, plain, flipped))  # type: ignore[arg-type]
    else:
        per = []
        for r, c in zip(results, choices, strict=True):
            served = build_classifier(run.job.architecture, len(run.labels))
            served.load_state_dict({k: v.float() for k, v in r.weights.items()}, strict=True)
            served.to(run.device)
            plain = tta.predict(served, test_ds, run.device)
            flipped = plain
            if c == "hflip":
                flipped = tta.predict(served, test_ds, run.device, hflip=True)
            per.append(tta.apply(c, plain, flipped))  # type: ignore[arg-type]
    mean: np.ndarray = np.stack(per).mean(axis=0)
    return mean


def _head(result: FoldResult, name: str) -> dict[str, torch.Tensor]:
    """A fold's head (weight, bias) as served (float16-rounded)."""
    return {k: result.weights[f"{name}.{k}"].float() for k in ("weight", "bias")}


def _report(
    probs: np.ndarray, y: np.ndarray, labels: list[str], threshold: float | None, p: TrainingParams,
    samples: int,
) -> dict[str, Any]:  # fmt: skip
    if threshold is not None:
        return E.binary_test_report(probs[:, 1], y, threshold, samples=samples, seed=p.seed)
    return E.multiclass_test_report(probs, y, labels, samples=samples, seed=p.seed)


def run_cross_validation(
    ctx: TrainerContext,
    job: JobSpec,
    reporter: Reporter,
    *,
    params: TrainingParams,
    labels: list[str],
    items: dict[str, list[ItemRef]],
    start: StartingPoint,
    spec: InputSpec,
    device: torch.device,
    provenance: DataProvenance,
    dataset_name: str,
    started: float,
) -> str:
    """Run (or resume) every fold, evaluate the ensemble on test once, register it all.

    Returns:
        The ensemble version's ``name:version``.
    """
    assert params.cross_validation is not None
    k = params.cross_validation.folds
    dev = items["train"] + items["validation"]
    index = {name: i for i, name in enumerate(labels)}
    targets = np.array([index[str(it.label)] for it in dev], dtype=np.int64)
    fold_of = assign_folds(targets, [_group(it) for it in dev], k, params.seed)
    if params.finetune == "head":
        _fp16_rounded(start.network)
    run = CvRun(ctx, job, reporter, params, labels, dev, items["test"], start, spec, device)
    features: Features | None = None
    if params.finetune == "head":
        reporter.phase("features", FitState())
        dev_ds = run.dataset(dev, ClassificationPresetEval(spec))
        features = extract(start.network, dev_ds, device, on_batch=reporter.features)
    meta = checkpoint_meta(ctx.store, job.checkpoint_key) if job.checkpoint_key else {}
    first, done = int(meta.get("fold", 1)), list(meta.get("done", []))
    for fold in range(first, k + 1):
        resume = job.checkpoint_key if fold == first else None
        reporter.fold(fold, k)
        train, held = np.flatnonzero(fold_of != fold - 1), np.flatnonzero(fold_of == fold - 1)
        fold_meta = {"fold": fold, "folds": k, "done": done}
        if features is not None:
            result = _fold_head(run, features, fold, train, held, resume, fold_meta)
        else:
            result = _fold_full(run, fold, train, held, resume, fold_meta)
        done = [*done, result.save(ctx)]
    results = [FoldResult.load(ctx, key) for key in done]
    train_seconds = time.perf_counter() - started
    reporter.phase("evaluating", FitState(epoch=0))
    return _finish(run, results, targets, provenance, dataset_name, started, train_seconds, done)


def _finish(
    run: CvRun,
    results: list[FoldResult],
    targets: np.ndarray,
    provenance: DataProvenance,
    dataset_name: str,
    started: float,
    train_seconds: float,
    blobs: list[str],
) -> str:
    p, job, labels = run.params, run.job, run.labels
    binary = len(labels) == 2
    choices: list[str] = []
    records: list[dict[str, Any]] = []
    oof = np.zeros((len(targets), len(labels)), dtype=np.float64)
    for r in results:
        choice, record = tta.decide(p.tta, r.plain, r.flipped, targets[r.held])
        choices.append(choice)
        records.append(record)
        oof[r.held] = tta.apply(choice, r.plain, r.flipped)
    op = roc = None
    if binary:
        op = choose_operating_point(
            oof[:, 1], targets, method="sensitivity", target_sensitivity=p.target_sensitivity,
            split=f"out-of-fold predictions ({len(results)}-fold cross-validation)",
        )  # fmt: skip
        roc = E.validation_roc(oof[:, 1], targets)
    oof_report = _report(oof, targets, labels, op.threshold if op else None, p, p.bootstrap_samples)
    test_targets = np.array([labels.index(str(it.label)) for it in run.test], dtype=np.int64)
    test_probs = _test_probs(run, results, choices)
    test_report = _report(
        test_probs, test_targets, labels, op.threshold if op else None, p, p.bootstrap_samples
    )
    test_monitor = E.classification_val_metrics(test_probs, test_targets, 0.0)
    test_monitor.pop("loss", None)
    folds = [
        {
            "fold": r.fold,
            "n_train": int(len(targets) - len(r.held)),
            "n_held_out": int(len(r.held)),
            "best_epoch": r.best_epoch,
            f"best_held_out_{job.monitor}": r.best_value,
            "epochs_run": len(r.history),
            "tta": c,
        }
        for r, c in zip(results, choices, strict=True)
    ]
    cv_record = {
        "folds": len(results),
        "grouping": "patient/study (dataset group ids); StratifiedGroupKFold, stratified by class",
        "pooled": "train + validation splits; the test split is used once, by the ensemble",
        "seed": p.seed,
        "finetune": p.finetune,
        "note": "each fold stops early on its held-out fold, so out-of-fold metrics lean "
        "optimistic; the test split is the unbiased estimate",
    }
    summary = {
        "test": test_report,
        "out_of_fold": oof_report,
        "folds": folds,
        "cross_validation": cv_record,
        "test_monitor": test_monitor,
    }
    with tempfile.TemporaryDirectory(prefix="medimg-cv-") as folder:
        paths = []
        for r in results:
            path = Path(folder) / f"fold{r.fold}.pt"
            save_weights_fp16({k: v.float() for k, v in r.weights.items()}, path)
            paths.append(path)
        cards = [
            _fold_card(run, r, c, rec, targets, provenance, dataset_name, started)
            for r, c, rec in zip(results, choices, records, strict=True)
        ]
        artifacts = {
            f"curves-fold{r.fold}.png": ("image/png", curves_png(r.history, job.monitor))
            for r in results
        }
        run.reporter.artifacts(artifacts)
        ref = _register(
            run, cards, paths, op, roc, summary, provenance, dataset_name, started, train_seconds,
            records, results,
        )  # fmt: skip
    for key in blobs:
        delete_checkpoint(run.ctx.store, key)
    return ref


def _base_name(model_name: str) -> str:
    return model_name[:93].rstrip("-")


def _fold_card(
    run: CvRun,
    r: FoldResult,
    choice: str,
    record: dict[str, Any],
    targets: np.ndarray,
    provenance: DataProvenance,
    dataset_name: str,
    started: float,
) -> ModelCard:
    job, p, labels = run.job, run.params, run.labels
    y = targets[r.held]
    probs = tta.apply(choice, r.plain, r.flipped)  # type: ignore[arg-type]
    op = None
    report: dict[str, Any] = {}
    if len(labels) == 2 and 0 < int(y.sum()) < len(y):
        op = choose_operating_point(
            probs[:, 1], y, method="sensitivity", target_sensitivity=p.target_sensitivity,
            split=f"held-out fold {r.fold}",
        )  # fmt: skip
        report = E.binary_test_report(probs[:, 1], y, op.threshold, samples=0, seed=p.seed)
    k = p.cross_validation.folds if p.cross_validation else 0
    return ModelCard(
        name=f"{_base_name(job.model_name)}-fold{r.fold}",
        task="classification",
        architecture=job.architecture,
        labels=labels,
        positive_label=labels[1] if len(labels) == 2 else None,
        input=run.spec,
        operating_point=op,
        validation_roc=None,
        ensemble=None,
        tta=choice,  # type: ignore[arg-type]
        description=(
            f"Fold {r.fold} of {k} of {job.architecture} cross-validation training job {job.id} "
            f"on dataset {dataset_name!r}; a member of ensemble {job.model_name!r}."
        ),
        intended_use="A member of its cross-validation ensemble; research use only.",
        limitations=f"Trained on {len(targets) - len(r.held)} images; held-out fold "
        f"{len(r.held)} images. Probabilities are not calibrated.",
        data=provenance,
        training=TrainingRecord(
            command=f"POST /v1/training-jobs (job {job.id}, fold {r.fold})",
            epochs=len(r.history),
            wall_time_s=round(time.perf_counter() - started, 1),
            hardware=hardware(run.device),
            seed=p.seed,
            extra={
                "params": {**p.model_dump(), "lr": p.lr or CLASSIFICATION_LR},
                "start_from": run.start.description,
                "fold": r.fold,
                "best_epoch": r.best_epoch,
                f"best_held_out_{job.monitor}": r.best_value,
                "history": r.history,
            },
        ),
        metrics={"validation": report, "tta": record},
    )


def _register(
    run: CvRun,
    cards: list[ModelCard],
    paths: list[Path],
    op: Any,
    roc: Any,
    summary: dict[str, Any],
    provenance: DataProvenance,
    dataset_name: str,
    started: float,
    train_seconds: float,
    records: list[dict[str, Any]],
    results: list[FoldResult],
) -> str:
    """Fold versions, then the ensemble over them, then success: one transaction."""
    job, ctx, p = run.job, run.ctx, run.params
    with ctx.sessions() as session:
        members = [
            register_version(session, ctx.store, card, path, job.tenant_id).ref
            for card, path in zip(cards, paths, strict=True)
        ]
        raw = {
            "name": job.model_name,
            "kind": "ensemble",
            "ensemble": {"members": members, "vote": "soft"},
            "operating_point": op.model_dump() if op else None,
            "validation_roc": [dict(x) for x in roc] if roc else None,
            "description": (
                f"Soft-voting ensemble of the {len(members)} fold models of cross-validation "
                f"training job {job.id} ({job.architecture}) on dataset {dataset_name!r}."
            ),
            "intended_use": "Research use on images like the training data; not a medical device.",
            "limitations": (
                f"Cross-validated on {sum(len(r.held) for r in results)} train + validation "
                f"images and tested on {len(run.test)} from one uploaded dataset; performance "
                "elsewhere is unknown. Probabilities are not calibrated."
            ),
            "data": provenance.model_dump(),
            "training": TrainingRecord(
                command=f"POST /v1/training-jobs (job {job.id})",
                epochs=sum(len(r.history) for r in results),
                wall_time_s=round(time.perf_counter() - started, 1),
                hardware=hardware(run.device),
                seed=p.seed,
                extra={
                    "params": {**p.model_dump(), "lr": p.lr or CLASSIFICATION_LR},
                    "start_from": run.start.description,
                    "train_time_s": round(train_seconds, 1),
                    "attempts": job.attempts,
                    "cross_validation": summary["cross_validation"],
                    "folds": summary["folds"],
                    "versions": versions_record(),
                },
            ).model_dump(),
            "metrics": {
                "test": summary["test"],
                "out_of_fold": summary["out_of_fold"],
                "test_monitor": summary["test_monitor"],
                "tta": {"members": records},
            },
        }
        card, pinned = build_ensemble(session, raw, job.tenant_id)
        version = register_version(session, ctx.store, card, None, job.tenant_id, members=pinned)
        promoted: bool | None = None
        test_metrics = dict(summary)
        if job.promote:
            # Fold ensembles are promoted when asked: no comparable incumbent score is kept.
            promoted = True
            set_alias(session, version, PRODUCTION)
            test_metrics["promotion"] = {"promoted": True, "reason": "promote requested"}
        ok = jobstate.succeed(
            session, job.id, job.worker, test_metrics=test_metrics, model_version_id=version.id,
            promoted=promoted, progress={**run.reporter.progress, "phase": "done"},
        )  # fmt: skip
        if not ok:
            session.rollback()
            raise Cancelled
        ref = version.ref
        session.commit()
    delete_checkpoint(ctx.store, run.reporter.checkpoint_key)
    return ref
