"""A detection training job: dataset items with boxes -> a registered detector version.

The detection pieces (datasets, augmentation, train/evaluate passes, mAP@0.5 and mAP over
IoU 0.40-0.75 with torchmetrics) live in `trainer.detection`; the sequence around them
(dataset, start, fit loop with resume and cancel, scoring the served weights, card,
registration) is `trainer.task_job`, shared with segmentation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from shared.ml.architectures import load_state_dict
from shared.ml.detection import build_detector, load_detector_state
from shared.ml.pretrained import imagenet_normalisation
from shared.schemas.models import InputSpec, ModelCard
from shared.schemas.training import DETECTION_LR
from trainer.context import JobSpec, TrainerContext
from trainer.detection.data import (
    DetectionDataset,
    DetectionItem,
    DetectionPresetEvalBoxes,
    DetectionPresetTrain,
    collate,
)
from trainer.detection.engine import evaluate, train_one_epoch
from trainer.detection.train_bccd import BACKBONES
from trainer.engine import param_groups
from trainer.fit import Loop, make_scaler, make_scheduler
from trainer.items import ItemRef
from trainer.progress import Reporter
from trainer.task_job import (
    Finish,
    finish,
    incumbent,
    prepare,
    run_fit,
    start_network,
    training_record,
)
from trainer.task_job import Scores as Monitored


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


def run_detection(ctx: TrainerContext, job: JobSpec, reporter: Reporter) -> str:
    """Train, evaluate (mAP), register; returns the new version's ref."""
    data = prepare(ctx, job)
    params, device, labels = data.params, data.device, data.labels
    splits = {name: _items(ctx, items) for name, items in data.refs.items()}
    mean, std = imagenet_normalisation(BACKBONES.get(job.architecture, "resnet50"))
    size = params.image_size
    spec = InputSpec(size=size, channels=3, mean=list(mean), std=list(std), resize="letterbox")

    def build(architecture: str, pretrained: bool) -> nn.Module:
        network: nn.Module = build_detector(
            architecture, labels, spec, pretrained_backbone=pretrained
        )
        return network

    network, start = start_network(
        ctx,
        job,
        labels,
        build,
        load_detector_state,
        noun="detector",
        pretrained_start="ImageNet backbone",
    )
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
    state = run_fit(ctx, job, reporter, loop)
    train_seconds = time.perf_counter() - data.started
    test_ds = DetectionDataset(splits["test"], labels, eval_tf)

    def evaluate_test(served: nn.Module) -> tuple[dict[str, Any], Monitored]:
        test = evaluate(served, _loader(test_ds, params.batch_size), device, labels)
        return test, val_metrics(test)

    def score_incumbent(architecture: str, card: ModelCard, path: Path) -> float | None:
        rival = build_detector(architecture, labels, card.input)
        load_detector_state(rival, load_state_dict(str(path)))
        preset = DetectionPresetEvalBoxes(card.input.size, card.input.mean)
        loader = _loader(DetectionDataset(splits["test"], labels, preset), 4)
        return val_metrics(evaluate(rival.to(device), loader, device, labels))[job.monitor]

    def card(test: dict[str, Any], test_monitor: Monitored) -> ModelCard:
        return ModelCard(
            name=job.model_name,
            task="detection",
            architecture=job.architecture,
            labels=labels,
            input=spec,
            description=(
                f"{job.architecture} detector trained by medimg training job {job.id} on "
                f"dataset {data.dataset_name!r} ({', '.join(labels)}); boxes in input pixels."
            ),
            intended_use="Research use on images like the training data; not a medical device.",
            limitations=(
                f"Trained on {len(train_ds)} images and tested on {len(test_ds)} from one "
                "uploaded dataset; other sites, scanners or magnifications are untested. "
                "Scores are not calibrated probabilities."
            ),
            data=data.provenance,
            training=training_record(
                job,
                data,
                state,
                lr=DETECTION_LR,
                start=start,
                train_seconds=train_seconds,
                extra={},
            ),
            metrics={
                "test": test,
                "validation": state.history[state.best_epoch - 1]["val_metrics"],
                "test_monitor": test_monitor,
                "n_images": {name: len(items) for name, items in splits.items()},
            },
        )

    return finish(
        ctx,
        job,
        reporter,
        data,
        state,
        Finish(
            build=build,
            load=load_detector_state,
            evaluate_test=evaluate_test,
            incumbent=lambda: incumbent(ctx, job, labels, "detection", score_incumbent),
            card=card,
        ),
    )
