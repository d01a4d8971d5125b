"""A detection training job: dataset items with boxes -> a registered detector version.

The detection pieces (datasets, augmentation, train/evaluate passes, mAP@0.5 and mAP over
IoU 0.40-0.75 with torchmetrics) live in `trainer.detection`; this module runs them inside
the job machinery shared with classification (resume, cancel, progress, registration).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from shared.errors import InvalidRequest
from shared.ml.architectures import load_state_dict
from shared.ml.detection import build_detector, load_detector_state
from shared.ml.pretrained import PretrainedWeightsMissing, imagenet_normalisation
from shared.registry import resolve_model_version
from shared.schemas.models import InputSpec, ModelCard, TrainingRecord
from shared.schemas.training import DETECTION_LR, TrainingParams
from trainer.card import save_weights_fp16
from trainer.context import JobSpec, TrainerContext, hardware, pick_device
from trainer.detection.data import (
    DetectionDataset,
    DetectionItem,
    DetectionPresetEvalBoxes,
    DetectionPresetTrain,
    collate,
)
from trainer.detection.engine import evaluate, train_one_epoch
from trainer.detection.train_bccd import BACKBONES
from trainer.engine import param_groups, seed_everything
from trainer.fit import FitHooks, Loop, fit, make_scaler, make_scheduler
from trainer.items import ItemRef, load_items
from trainer.progress import Reporter
from trainer.publish import (
    Incumbent,
    dataset_provenance,
    production_version,
    publish,
    versions_record,
)
from trainer.reporting import curves_png, tensorboard_events


def val_metrics(result: dict[str, Any]) -> dict[str, float | None]:
    """The monitored names: ``map`` (RSNA-style, IoU 0.40-0.75) and ``map_50``."""
    return {"map": result["map_40_75"], "map_50": result["map_50"]}


def _items(ctx: TrainerContext, refs: list[ItemRef]) -> list[DetectionItem]:
    return [
        DetectionItem(ctx.store.path(r.storage_key), list(r.boxes or []), r.width, r.height)
        for r in refs
    ]


def _loader(ds: DetectionDataset, batch: int, generator: torch.Generator | None = None) -> Any:
    return DataLoader(
        ds, batch, shuffle=generator is not None, generator=generator, collate_fn=collate
    )


def _network(
    ctx: TrainerContext, job: JobSpec, labels: list[str], spec: InputSpec
) -> tuple[torch.nn.Module, str]:
    if job.start_from in ("random", "imagenet"):
        pretrained = job.start_from == "imagenet"
        try:
            network = build_detector(job.architecture, labels, spec, pretrained_backbone=pretrained)
        except PretrainedWeightsMissing as exc:
            raise InvalidRequest(exc.detail) from None
        return network, "ImageNet backbone" if pretrained else "random initialisation"
    with ctx.sessions() as session:
        parent = resolve_model_version(session, job.start_from, job.tenant_id)
        parent_ref, parent_labels, arch = parent.ref, list(parent.labels), parent.architecture
        path = ctx.store.path(parent.weights_key)
    if arch != job.architecture or parent_labels != labels:
        raise InvalidRequest(
            f"{parent_ref} ({arch}, labels {parent_labels}) cannot start this job: continuing a "
            "detector needs the same architecture and labels"
        )
    network = build_detector(job.architecture, labels, spec)
    load_detector_state(network, load_state_dict(str(path)))
    return network, f"continued from {parent_ref}"


def _incumbent(
    ctx: TrainerContext, job: JobSpec, labels: list[str], test: list[DetectionItem], device: Any
) -> Incumbent | None:
    with ctx.sessions() as session:
        version = production_version(session, job.model_name)
        if version is None:
            return None
        ref, arch, same = version.ref, version.architecture, list(version.labels) == labels
        card = ModelCard.model_validate(version.card)
        path = ctx.store.path(version.weights_key)
    if not same:
        return Incumbent(ref, None)
    network = build_detector(arch, labels, card.input)
    load_detector_state(network, load_state_dict(str(path)))
    ds = DetectionDataset(test, labels, DetectionPresetEvalBoxes(card.input.size, card.input.mean))
    result = evaluate(network.to(device), _loader(ds, 4), device, labels)
    return Incumbent(ref, val_metrics(result)[job.monitor])


def run_detection(ctx: TrainerContext, job: JobSpec, reporter: Reporter) -> str:
    """Train, evaluate (mAP), register; returns the new version's ref."""
    started = time.perf_counter()
    params = TrainingParams.model_validate(job.params)
    device = pick_device()
    seed_everything(params.seed)
    with ctx.sessions() as session:
        provenance, dataset_name, labels = dataset_provenance(session, job.dataset_version_id)
        refs = load_items(session, job.dataset_version_id)
    for split in ("train", "validation", "test"):
        if not refs[split]:
            raise InvalidRequest(f"the dataset version has no {split} images; re-import it")
    splits = {name: _items(ctx, items) for name, items in refs.items()}
    mean, std = imagenet_normalisation(BACKBONES.get(job.architecture, "resnet50"))
    size = params.image_size
    spec = InputSpec(size=size, channels=3, mean=list(mean), std=list(std), resize="letterbox")
    network, start = _network(ctx, job, labels, spec)
    network.to(device)
    eval_tf = DetectionPresetEvalBoxes(size, mean)
    train_ds = DetectionDataset(
        splits["train"],
        labels,
        DetectionPresetTrain(size, mean, hflip_prob=params.hflip_prob, vflip_prob=0.0),
    )
    val_loader = _loader(DetectionDataset(splits["validation"], labels, eval_tf), params.batch_size)
    generator = torch.Generator().manual_seed(params.seed)
    train_loader = _loader(train_ds, params.batch_size, generator)
    optimizer = torch.optim.AdamW(
        param_groups(network, params.weight_decay),
        lr=params.lr if params.lr is not None else DETECTION_LR,
    )
    scaler = make_scaler(params, device)

    def train_epoch(on_step: Callable[[int, float], None]) -> float:
        return train_one_epoch(
            network,
            optimizer,
            train_loader,
            device,
            scaler,
            on_step=lambda step, loss: on_step(step + 1, loss),
        )

    def validate() -> tuple[float | None, dict[str, float | None]]:
        return None, val_metrics(evaluate(network, val_loader, device, labels))

    loop = Loop(
        network,
        optimizer,
        make_scheduler(optimizer, params, job.monitor),
        scaler,
        generator,
        len(train_loader),
        train_epoch,
        validate,
    )
    state = fit(
        loop,
        params=params,
        monitor=job.monitor,
        store=ctx.store,
        resume_key=job.checkpoint_key,
        hooks=FitHooks(on_step=reporter.on_step, on_epoch=reporter.on_epoch),
    )
    train_seconds = time.perf_counter() - started
    reporter.phase("evaluating", state)
    with tempfile.TemporaryDirectory(prefix="medimg-train-") as folder:
        weights = Path(folder) / "weights.pt"
        assert state.best_state is not None
        save_weights_fp16(state.best_state, weights)
        served = build_detector(job.architecture, labels, spec)
        state_dict = torch.load(weights, map_location="cpu", weights_only=True)
        load_detector_state(
            served, {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
        )
        served.to(device)
        test_ds = DetectionDataset(splits["test"], labels, eval_tf)
        test = evaluate(served, _loader(test_ds, params.batch_size), device, labels)
        test_monitor = val_metrics(test)
        incumbent = _incumbent(ctx, job, labels, splits["test"], device) if job.promote else None
        card = ModelCard(
            name=job.model_name,
            task="detection",
            architecture=job.architecture,
            labels=labels,
            input=spec,
            description=(
                f"{job.architecture} detector trained by medimg training job {job.id} on "
                f"dataset {dataset_name!r} ({', '.join(labels)}); boxes in input pixels."
            ),
            intended_use="Research use on images like the training data; not a medical device.",
            limitations=(
                f"Trained on {len(train_ds)} images and tested on {len(test_ds)} from one "
                "uploaded dataset; other sites, scanners or magnifications are untested. "
                "Scores are not calibrated probabilities."
            ),
            data=provenance,
            training=TrainingRecord(
                command=f"POST /v1/training-jobs (job {job.id})",
                epochs=len(state.history),
                wall_time_s=round(time.perf_counter() - started, 1),
                hardware=hardware(device),
                seed=params.seed,
                extra={
                    "params": {**params.model_dump(), "lr": params.lr or DETECTION_LR},
                    "start_from": start,
                    "monitor": job.monitor,
                    "best_epoch": state.best_epoch,
                    f"best_validation_{job.monitor}": state.best_value,
                    "train_time_s": round(train_seconds, 1),
                    "attempts": job.attempts,
                    "weights_dtype": "float16",
                    "versions": versions_record(),
                    "history": state.history,
                },
            ),
            metrics={
                "test": test,
                "validation": state.history[state.best_epoch - 1]["val_metrics"],
                "test_monitor": test_monitor,
                "n_images": {name: len(items) for name, items in splits.items()},
            },
        )
        reporter.artifacts(
            {
                "curves.png": ("image/png", curves_png(state.history, job.monitor)),
                f"events.out.tfevents.{job.id}": (
                    "application/octet-stream",
                    tensorboard_events(
                        state.history, {k: v for k, v in test_monitor.items() if v is not None}
                    ),
                ),
            }
        )
        return publish(
            ctx,
            job,
            card,
            weights,
            test_metrics={
                "test": test,
                "test_monitor": test_monitor,
                "best_epoch": state.best_epoch,
            },
            value=test_monitor.get(job.monitor),
            incumbent=incumbent,
            progress=reporter.final(state),
        )
