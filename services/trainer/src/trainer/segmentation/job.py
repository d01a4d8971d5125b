"""A segmentation training job: dataset items with label maps -> a registered U-Net version.

Runs inside the job machinery shared with classification and detection: the same fit loop
(`trainer.fit`: resume, cancel, early stopping on validation Dice, checkpoints), progress
reporting and registration.
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
from shared.ml.pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedWeightsMissing
from shared.ml.segmentation import build_segmenter
from shared.registry import resolve_model_version
from shared.schemas.models import InputSpec, ModelCard, TrainingRecord
from shared.schemas.training import SEGMENTATION_ENCODERS, SEGMENTATION_LR, TrainingParams
from trainer.card import save_weights_fp16
from trainer.context import JobSpec, TrainerContext, hardware, pick_device
from trainer.engine import param_groups, seed_everything, train_one_epoch
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
from trainer.segmentation.card import render_segmentation_readme
from trainer.segmentation.data import (
    SegmentationDataset,
    SegmentationPresetTrain,
    collate_eval,
)
from trainer.segmentation.engine import DiceCELoss, evaluate
from trainer.segmentation.schedule import ProgressSchedule

EVAL_BATCH = 8


def _network(ctx: TrainerContext, job: JobSpec, labels: list[str]) -> tuple[torch.nn.Module, str]:
    if job.start_from in ("random", "imagenet"):
        pretrained = job.start_from == "imagenet"
        try:
            network = build_segmenter(job.architecture, len(labels), pretrained=pretrained)
        except PretrainedWeightsMissing as exc:
            raise InvalidRequest(exc.detail) from None
        encoder = SEGMENTATION_ENCODERS[job.architecture]
        return network, f"ImageNet {encoder} encoder" if pretrained else "random initialisation"
    with ctx.sessions() as session:
        parent = resolve_model_version(session, job.start_from, job.tenant_id)
        parent_ref, parent_labels, arch = parent.ref, list(parent.labels), parent.architecture
        path = ctx.store.path(parent.weights_key)
    if arch != job.architecture or parent_labels != labels:
        raise InvalidRequest(
            f"{parent_ref} ({arch}, labels {parent_labels}) cannot start this job: continuing a "
            "segmentation model needs the same architecture and labels"
        )
    network = build_segmenter(job.architecture, len(labels))
    network.load_state_dict(load_state_dict(str(path)), strict=True)
    return network, f"continued from {parent_ref}"


def _eval_loader(ctx: TrainerContext, items: list[ItemRef], spec: InputSpec) -> DataLoader[Any]:
    ds = SegmentationDataset(ctx.store, items, spec, max_pixels=ctx.settings.max_image_pixels)
    return DataLoader(ds, EVAL_BATCH, collate_fn=collate_eval)


def _incumbent(
    ctx: TrainerContext, job: JobSpec, labels: list[str], test: list[ItemRef], device: Any
) -> Incumbent | None:
    with ctx.sessions() as session:
        version = production_version(session, job.model_name)
        if version is None:
            return None
        ref, arch, same = version.ref, version.architecture, list(version.labels) == labels
        card = ModelCard.model_validate(version.card)
        path = ctx.store.path(version.weights_key)
    if not same or card.task != "segmentation":
        return Incumbent(ref, None)
    network = build_segmenter(arch, len(labels))
    network.load_state_dict(load_state_dict(str(path)), strict=True)
    scores = evaluate(network.to(device), _eval_loader(ctx, test, card.input), device, labels)
    return Incumbent(ref, scores.summary()[job.monitor])


def run_segmentation(ctx: TrainerContext, job: JobSpec, reporter: Reporter) -> str:
    """Train, evaluate (Dice, IoU, HD95 with bootstrap CIs), register; returns the ref."""
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
    if any(r.mask_key is None for items in refs.values() for r in items):
        raise InvalidRequest("the dataset version has images without masks; re-import it")
    spec = InputSpec(
        size=params.image_size, channels=3, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
        resize="letterbox",
    )  # fmt: skip
    network, start = _network(ctx, job, labels)
    network.to(device)
    train_ds = SegmentationDataset(
        ctx.store,
        refs["train"],
        spec,
        max_pixels=ctx.settings.max_image_pixels,
        train=SegmentationPresetTrain(spec, hflip_prob=params.hflip_prob),
        seed=params.seed,
    )
    generator = torch.Generator().manual_seed(params.seed)
    # BatchNorm cannot train on a final batch of one image.
    drop_last = len(train_ds) > params.batch_size and len(train_ds) % params.batch_size == 1
    train_loader = DataLoader(
        train_ds, params.batch_size, shuffle=True, generator=generator, drop_last=drop_last
    )
    val_loader = _eval_loader(ctx, refs["validation"], spec)
    lr = params.lr if params.lr is not None else SEGMENTATION_LR
    optimizer = torch.optim.AdamW(param_groups(network, params.weight_decay), lr=lr)
    scaler = make_scaler(params, device)
    criterion = DiceCELoss()
    # Per-step warm-up + cosine to the planned steps or the time budget (the default);
    # "plateau" keeps the per-epoch reduce-on-plateau rule shared with classification.
    schedule: Any = (
        ProgressSchedule(
            optimizer,
            total_steps=params.epochs * len(train_loader),
            budget_s=params.time_budget_s,
        )
        if params.lr_scheduler == "cosine"
        else make_scheduler(optimizer, params, job.monitor)
    )
    per_batch = isinstance(schedule, ProgressSchedule)

    def train_epoch(on_step: Callable[[int, float], None]) -> float:
        train_ds.epoch += 1

        def stepped(step: int, loss: float) -> None:
            if per_batch:
                schedule.step_batch()
            on_step(step, loss)

        return train_one_epoch(
            network, criterion, optimizer, train_loader, device, scaler=scaler, on_step=stepped
        )

    def validate() -> tuple[float | None, dict[str, float | None]]:
        return None, dict(evaluate(network, val_loader, device, labels).summary())

    loop = Loop(
        network,
        optimizer,
        schedule,
        scaler,
        generator,
        len(train_loader),
        train_epoch,
        validate,
        should_stop=schedule.exhausted if per_batch else None,
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
        # Score exactly what will be served: the fp16 weights, loaded as the worker does.
        served = build_segmenter(job.architecture, len(labels))
        served.load_state_dict(load_state_dict(str(weights)), strict=True)
        served.to(device)
        scores = evaluate(served, _eval_loader(ctx, refs["test"], spec), device, labels)
        test = scores.report(samples=params.bootstrap_samples, seed=params.seed)
        test_monitor = scores.summary()
        incumbent = _incumbent(ctx, job, labels, refs["test"], device) if job.promote else None
        n_images = {name: len(items) for name, items in refs.items()}
        schedule_text = schedule.describe() if per_batch else "reduce on plateau (per epoch)"
        card = _card(job, labels, spec, dataset_name, provenance, n_images, test, state,
                     params, start, device, started, train_seconds, schedule_text)  # fmt: skip
        reporter.artifacts(
            {
                "curves.png": ("image/png", curves_png(state.history, job.monitor)),
                "model_card.md": ("text/markdown", render_segmentation_readme(card).encode()),
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


def _card(
    job: JobSpec,
    labels: list[str],
    spec: InputSpec,
    dataset_name: str,
    provenance: Any,
    n_images: dict[str, int],
    test: dict[str, Any],
    state: Any,
    params: TrainingParams,
    start: str,
    device: torch.device,
    started: float,
    train_seconds: float,
    schedule: str,
) -> ModelCard:
    dice, ci = test.get("dice"), test.get("dice_ci95")
    shown = f"test Dice {dice} (95% CI {ci})" if dice is not None else "no test Dice"
    return ModelCard(
        name=job.model_name,
        task="segmentation",
        architecture=job.architecture,
        labels=labels,
        input=spec,
        description=(
            f"{job.architecture} U-Net trained by medimg training job {job.id} on dataset "
            f"{dataset_name!r} ({', '.join(labels[1:])}; {labels[0]} = class 0); masks come "
            f"back in the uploaded image's pixel grid; {shown} over {n_images['test']} images."
        ),
        intended_use=(
            "Research use: outlining the trained structures on 2D images like the training "
            "data, for measurement support and review by a qualified reader; not a medical "
            "device and not for diagnosis."
        ),
        limitations=(
            f"Trained on {n_images['train']} images and tested on {n_images['test']} from one "
            "uploaded dataset; other sites, devices, views or magnifications are untested. "
            "Per-pixel probabilities are not calibrated; areas in mm² need DICOM PixelSpacing."
        ),
        data=provenance,
        training=TrainingRecord(
            command=f"POST /v1/training-jobs (job {job.id})",
            epochs=len(state.history),
            wall_time_s=round(time.perf_counter() - started, 1),
            hardware=hardware(device),
            seed=params.seed,
            extra={
                "params": {**params.model_dump(), "lr": params.lr or SEGMENTATION_LR},
                "loss": "cross-entropy + soft Dice (foreground classes)",
                "schedule": schedule,
                "augmentation": "affine (scale 0.8-1.2, rotation 15 deg, shift 10%), "
                f"hflip p={params.hflip_prob}, brightness/contrast, gamma 0.7-1.5 (p=0.3); "
                "same geometry on the mask",
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
            "n_images": n_images,
            "definitions": "Dice/IoU per case then mean; empty-vs-empty = 1.0; HD95 in pixels "
            "(and mm with PixelSpacing), undefined when one of the two masks is empty",
        },
    )
