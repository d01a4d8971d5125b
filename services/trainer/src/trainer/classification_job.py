"""A classification training job from dataset items to a registered model version."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from shared.errors import InvalidRequest
from shared.ml.architectures import build_classifier, load_state_dict
from shared.ml.presets import ClassificationPresetEval
from shared.schemas.models import InputSpec, ModelCard, TrainingRecord
from shared.schemas.training import CLASSIFICATION_LR, TrainingParams
from trainer import evaluation as E
from trainer import tta
from trainer.card import choose_operating_point, render_readme, save_weights_fp16
from trainer.context import JobSpec, TrainerContext, hardware, pick_device
from trainer.cross_validation import run_cross_validation
from trainer.engine import EvalOutput, evaluate, seed_everything
from trainer.fit import FitHooks, fit_classifier
from trainer.fit_state import FitState, delete_checkpoint
from trainer.head_fit import extract, fit_head, full_state
from trainer.items import ItemRef, ItemsClassification, load_items
from trainer.presets import ClassificationPresetTrain
from trainer.progress import Reporter
from trainer.publish import (
    Incumbent,
    dataset_provenance,
    production_version,
    publish,
    versions_record,
)
from trainer.reporting import curves_png, tensorboard_events
from trainer.starting_points import build_start

log = logging.getLogger(__name__)


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


class Data:
    """The dataset version's splits as torch datasets with the right transforms."""

    def __init__(self, ctx: TrainerContext, items: dict[str, list[ItemRef]], labels: list[str]):
        for split in ("train", "validation", "test"):
            if not items[split]:
                raise InvalidRequest(f"the dataset version has no {split} images; re-import it")
        self.ctx, self.items, self.labels = ctx, items, labels

    def split(self, name: str, transform: Any, decode_size: int) -> ItemsClassification:
        return ItemsClassification(
            self.ctx.store,
            self.items[name],
            self.labels,
            transform,
            max_pixels=self.ctx.settings.max_image_pixels,
            decode_size=decode_size,
        )


def _predict(network: torch.nn.Module, ds: ItemsClassification, device: torch.device) -> EvalOutput:
    return evaluate(network, DataLoader(ds, 64), device)


def _incumbent(
    ctx: TrainerContext, job: JobSpec, data: Data, device: torch.device
) -> Incumbent | None:
    """The production version's monitored metric on this job's test split (same labels only)."""
    with ctx.sessions() as session:
        version = production_version(session, job.model_name)
        if version is None:
            return None
        ref, labels, arch = version.ref, list(version.labels), version.architecture
        card = ModelCard.model_validate(version.card)
        path = ctx.store.path(version.weights_key)
    if labels != data.labels:
        return Incumbent(ref, None)
    network = build_classifier(arch, len(labels))
    network.load_state_dict(load_state_dict(str(path)), strict=True)
    spec = card.input
    test = data.split("test", ClassificationPresetEval(spec), spec.native_size or spec.size)
    network.to(device)
    out = _predict(network, test, device)
    if card.tta == "hflip":  # scored as it is served, as the new version is
        out = replace(out, probs=tta.apply("hflip", out.probs, tta.predict(
            network, test, device, hflip=True)))  # fmt: skip
    return Incumbent(
        ref, E.classification_val_metrics(out.probs, out.labels, out.loss)[job.monitor]
    )


def _fit_head_only(
    ctx: TrainerContext,
    job: JobSpec,
    reporter: Reporter,
    data: Data,
    network: torch.nn.Module,
    eval_tf: ClassificationPresetEval,
    params: TrainingParams,
    device: torch.device,
    hooks: FitHooks,
) -> FitState:
    """Frozen backbone: features once (un-augmented), the head trained on them."""
    reporter.phase("features", FitState())
    size = params.image_size
    train = extract(network, data.split("train", eval_tf, size), device, on_batch=reporter.features)
    val = extract(network, data.split("validation", eval_tf, size), device)
    counts = [int(c) for c in torch.bincount(train.labels, minlength=len(data.labels))]
    state = fit_head(
        network, train, val, class_counts=counts, params=params, monitor=job.monitor,
        store=ctx.store, resume_key=job.checkpoint_key, hooks=hooks,
    )  # fmt: skip
    assert state.best_state is not None
    state.best_state = full_state(network, state.best_state)
    return state


def run_classification(ctx: TrainerContext, job: JobSpec, reporter: Reporter) -> str:
    """Train, evaluate, register; returns the new version's ref.

    Raises:
        Cancelled: the job was cancelled; nothing more is written.
        AppError: unusable dataset or starting point (the job fails with it).
    """
    started = time.perf_counter()
    params = TrainingParams.model_validate(job.params)
    device = pick_device()
    seed_everything(params.seed)
    with ctx.sessions() as session:
        provenance, dataset_name, labels = dataset_provenance(session, job.dataset_version_id)
        data = Data(ctx, load_items(session, job.dataset_version_id), labels)
        start = build_start(
            session,
            ctx.store,
            start_from=job.start_from,
            architecture=job.architecture,
            labels=labels,
            tenant_id=job.tenant_id,
        )
    size = params.image_size
    mean, std = start.mean, start.std
    if mean is None or std is None:
        m, s = data.split("train", _identity, size).pixel_stats()
        mean, std = [round(m, 4)] * 3, [round(s, 4)] * 3
    spec = InputSpec(size=size, channels=3, mean=mean, std=std, resize="center_crop")
    if params.cross_validation is not None:
        return run_cross_validation(
            ctx, job, reporter, params=params, labels=labels, items=data.items, start=start,
            spec=spec, device=device, provenance=provenance, dataset_name=dataset_name,
            started=started,
        )  # fmt: skip
    eval_tf = ClassificationPresetEval(spec)
    train_ds = data.split(
        "train", ClassificationPresetTrain(spec, hflip_prob=params.hflip_prob), size
    )
    val_ds, test_ds = data.split("validation", eval_tf, size), data.split("test", eval_tf, size)
    if 0 in train_ds.class_counts():
        raise InvalidRequest(f"every label needs training images; counts {train_ds.class_counts()}")

    network = start.network.to(device)
    hooks = FitHooks(on_step=reporter.on_step, on_epoch=reporter.on_epoch)
    if params.finetune == "head":
        state = _fit_head_only(ctx, job, reporter, data, network, eval_tf, params, device, hooks)
    else:
        state = fit_classifier(
            network,
            train_ds,
            val_ds,
            params=params,
            monitor=job.monitor,
            device=device,
            store=ctx.store,
            resume_key=job.checkpoint_key,
            hooks=hooks,
        )
    train_seconds = time.perf_counter() - started
    reporter.phase("evaluating", state)
    binary = len(labels) == 2
    with tempfile.TemporaryDirectory(prefix="medimg-train-") as folder:
        weights = Path(folder) / "weights.pt"
        assert state.best_state is not None
        # Ship fp16 and measure what ships, loaded exactly as the inference worker loads it.
        save_weights_fp16(state.best_state, weights)
        served = build_classifier(job.architecture, len(labels))
        served.load_state_dict(load_state_dict(str(weights)), strict=True)
        served.to(device)
        val, test = _predict(served, val_ds, device), _predict(served, test_ds, device)
        # Flip averaging is measured on validation; the test split only sees the choice.
        tta_choice, tta_record = tta.decide(
            params.tta, val.probs, tta.predict(served, val_ds, device, hflip=True), val.labels
        )
        if tta_choice == "hflip":
            val = replace(val, probs=tta.apply("hflip", val.probs, tta.predict(
                served, val_ds, device, hflip=True)))  # fmt: skip
            test = replace(test, probs=tta.apply("hflip", test.probs, tta.predict(
                served, test_ds, device, hflip=True)))  # fmt: skip
        samples, seed = params.bootstrap_samples, params.seed
        op, roc = None, None
        if binary:
            op = choose_operating_point(
                val.probs[:, 1],
                val.labels,
                method="sensitivity",
                target_sensitivity=params.target_sensitivity,
                split="validation",
            )
            roc = E.validation_roc(val.probs[:, 1], val.labels)
            test_report = E.binary_test_report(
                test.probs[:, 1], test.labels, op.threshold, samples=samples, seed=seed
            )
            val_report = E.binary_test_report(
                val.probs[:, 1], val.labels, op.threshold, samples=0, seed=seed
            )
        else:
            test_report = E.multiclass_test_report(
                test.probs, test.labels, labels, samples=samples, seed=seed
            )
            val_report = E.multiclass_test_report(
                val.probs, val.labels, labels, samples=0, seed=seed
            )
        test_monitor = E.classification_val_metrics(test.probs, test.labels, test.loss)
        incumbent = _incumbent(ctx, job, data, device) if job.promote else None
        history = state.history
        card = ModelCard(
            name=job.model_name,
            task="classification",
            architecture=job.architecture,
            labels=labels,
            positive_label=labels[1] if binary else None,
            input=spec,
            operating_point=op,
            validation_roc=roc,
            tta=tta_choice,
            description=(
                f"{job.architecture} trained by medimg training job {job.id} on dataset "
                f"{dataset_name!r} ({', '.join(labels)})."
            ),
            intended_use="Research use on images like the training data; not a medical device.",
            limitations=(
                f"Trained on {len(train_ds)} images and tested on {len(test_ds)} from one "
                "uploaded dataset; performance elsewhere (sites, scanners, populations) is "
                "unknown. Probabilities are not calibrated."
            ),
            data=provenance,
            training=TrainingRecord(
                command=f"POST /v1/training-jobs (job {job.id})",
                epochs=len(history),
                wall_time_s=round(time.perf_counter() - started, 1),
                hardware=hardware(device),
                seed=params.seed,
                extra={
                    "params": {**params.model_dump(), "lr": params.lr or CLASSIFICATION_LR},
                    "start_from": start.description,
                    "monitor": job.monitor,
                    "best_epoch": state.best_epoch,
                    f"best_validation_{job.monitor}": state.best_value,
                    "selection": f"best validation {job.monitor}; early stopping patience "
                    f"{params.patience}",
                    "train_time_s": round(train_seconds, 1),
                    "attempts": job.attempts,
                    "train_images": len(train_ds),
                    "class_counts_train": train_ds.class_counts(),
                    "weights_dtype": "float16",
                    "versions": versions_record(),
                    "history": history,
                },
            ),
            metrics={
                "test": test_report,
                "validation": val_report,
                "test_monitor": test_monitor,
                "tta": tta_record,
            },
        )
        reporter.artifacts(
            {
                "curves.png": ("image/png", curves_png(history, job.monitor)),
                f"events.out.tfevents.{job.id}": (
                    "application/octet-stream",
                    tensorboard_events(
                        history, {k: v for k, v in test_monitor.items() if v is not None}
                    ),
                ),
                "model_card.md": ("text/markdown", render_readme(card).encode()),
            }
        )
        summary = {
            "test": test_report,
            "test_monitor": test_monitor,
            "best_epoch": state.best_epoch,
        }
        ref = publish(
            ctx,
            job,
            card,
            weights,
            test_metrics=summary,
            value=test_monitor.get(job.monitor),
            incumbent=incumbent,
            progress=reporter.final(state),
        )
    delete_checkpoint(ctx.store, reporter.checkpoint_key)
    return ref
