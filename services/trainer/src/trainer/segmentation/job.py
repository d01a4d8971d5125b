"""A segmentation training job: dataset items with label maps -> a registered U-Net version.

The sequence around the task (dataset, start, fit loop with resume, cancel and early stopping
on validation Dice, scoring the served weights, card, registration) is `trainer.task_job`,
shared with detection; this module supplies the U-Net, its data, loss, schedule and card.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from shared.errors import InvalidRequest
from shared.ml.architectures import load_state_dict
from shared.ml.pretrained import IMAGENET_MEAN, IMAGENET_STD
from shared.ml.segmentation import build_segmenter
from shared.schemas.models import InputSpec, ModelCard
from shared.schemas.training import SEGMENTATION_ENCODERS, SEGMENTATION_LR, TrainingParams
from trainer.context import JobSpec, TrainerContext
from trainer.engine import param_groups, train_one_epoch
from trainer.fit import Loop, make_scaler, make_scheduler
from trainer.items import ItemRef
from trainer.progress import Reporter
from trainer.segmentation.card import render_segmentation_readme
from trainer.segmentation.data import (
    SegmentationDataset,
    SegmentationPresetTrain,
    collate_eval,
)
from trainer.segmentation.engine import DiceCELoss, evaluate
from trainer.segmentation.schedule import ProgressSchedule, train_within
from trainer.task_job import (
    Finish,
    JobData,
    finish,
    incumbent,
    prepare,
    run_fit,
    start_network,
    training_record,
)
from trainer.task_job import Scores as Monitored

EVAL_BATCH = 8


def _load(network: nn.Module, state: dict[str, torch.Tensor]) -> None:
    network.load_state_dict(state, strict=True)


def _eval_loader(ctx: TrainerContext, items: list[ItemRef], spec: InputSpec) -> DataLoader[Any]:
    ds = SegmentationDataset(ctx.store, items, spec, max_pixels=ctx.settings.max_image_pixels)
    return DataLoader(ds, EVAL_BATCH, collate_fn=collate_eval)


def _spec(params: TrainingParams) -> InputSpec:
    return InputSpec(
        size=params.image_size, channels=3, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
        resize="letterbox",
    )  # fmt: skip


def run_segmentation(ctx: TrainerContext, job: JobSpec, reporter: Reporter) -> str:
    """Train, evaluate (Dice, IoU, HD95 with bootstrap CIs), register; returns the ref."""
    data = prepare(ctx, job)
    params, device, labels, refs = data.params, data.device, data.labels, data.refs
    if any(r.mask_key is None for items in refs.values() for r in items):
        raise InvalidRequest("the dataset version has images without masks; re-import it")
    spec = _spec(params)

    def build(architecture: str, pretrained: bool) -> nn.Module:
        network: nn.Module = build_segmenter(architecture, len(labels), pretrained=pretrained)
        return network

    encoder = SEGMENTATION_ENCODERS.get(job.architecture, job.architecture)
    network, start = start_network(
        ctx,
        job,
        labels,
        build,
        _load,
        noun="segmentation model",
        pretrained_start=f"ImageNet {encoder} encoder",
    )
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

        def run_pass(hook: Callable[[int, float], None]) -> float:
            return train_one_epoch(
                network, criterion, optimizer, train_loader, device, scaler=scaler, on_step=hook
            )

        return train_within(schedule, run_pass, on_step) if per_batch else run_pass(on_step)

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
    state = run_fit(ctx, job, reporter, loop)
    train_seconds = time.perf_counter() - data.started

    def evaluate_test(served: nn.Module) -> tuple[dict[str, Any], Monitored]:
        scores = evaluate(served, _eval_loader(ctx, refs["test"], spec), device, labels)
        test = scores.report(samples=params.bootstrap_samples, seed=params.seed)
        return test, dict(scores.summary())

    def score_incumbent(architecture: str, card: ModelCard, path: Path) -> float | None:
        rival = build_segmenter(architecture, len(labels))
        _load(rival, load_state_dict(str(path)))
        loader = _eval_loader(ctx, refs["test"], card.input)
        return evaluate(rival.to(device), loader, device, labels).summary()[job.monitor]

    schedule_text = schedule.describe() if per_batch else "reduce on plateau (per epoch)"

    def card(test: dict[str, Any], _monitored: Monitored) -> ModelCard:
        return _card(job, data, spec, test, state, start, train_seconds, schedule_text)

    return finish(
        ctx,
        job,
        reporter,
        data,
        state,
        Finish(
            build=build,
            load=_load,
            evaluate_test=evaluate_test,
            incumbent=lambda: incumbent(ctx, job, labels, "segmentation", score_incumbent),
            card=card,
            readme=render_segmentation_readme,
        ),
    )


def _card(
    job: JobSpec,
    data: JobData,
    spec: InputSpec,
    test: dict[str, Any],
    state: Any,
    start: str,
    train_seconds: float,
    schedule: str,
) -> ModelCard:
    labels, n_images, params = data.labels, data.n_images, data.params
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
            f"{data.dataset_name!r} ({', '.join(labels[1:])}; {labels[0]} = class 0); masks "
            f"come back in the uploaded image's pixel grid; {shown} over {n_images['test']} "
            "images."
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
        data=data.provenance,
        training=training_record(
            job,
            data,
            state,
            lr=SEGMENTATION_LR,
            start=start,
            train_seconds=train_seconds,
            extra={
                "loss": "cross-entropy + soft Dice (foreground classes)",
                "schedule": schedule,
                "augmentation": "affine (scale 0.8-1.2, rotation 15 deg, shift 10%), "
                f"hflip p={params.hflip_prob}, brightness/contrast, gamma 0.7-1.5 (p=0.3); "
                "same geometry on the mask",
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
