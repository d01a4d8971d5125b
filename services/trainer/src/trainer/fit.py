"""The classification fit loop of a training job: resumable, cancellable, early-stopped.

Per epoch: train (mixed precision on CUDA), evaluate on validation, step the LR schedule,
keep the best weights on the monitored metric, checkpoint, report. A job restarted from a
checkpoint continues with the next epoch and the same random streams.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from shared.schemas.training import CLASSIFICATION_LR, LOWER_IS_BETTER, TrainingParams
from shared.storage import BlobStore
from trainer.engine import evaluate, make_criterion, param_groups, train_one_epoch
from trainer.evaluation import classification_val_metrics, improved
from trainer.fit_state import FitState, load_checkpoint, save_checkpoint
from trainer.items import ItemsClassification


class Cancelled(Exception):
    """The job was cancelled (or taken over) while training; stop without writing more."""


@dataclass
class FitHooks:
    # (epoch, step, steps, loss): may raise Cancelled.
    on_step: Callable[[int, int, int, float], None]
    # (state after the epoch, checkpoint key): False when the job is no longer running.
    on_epoch: Callable[[FitState, str], bool]


def make_scheduler(optimizer: torch.optim.Optimizer, params: TrainingParams, monitor: str) -> Any:
    if params.lr_scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=params.epochs)
    mode = "min" if monitor in LOWER_IS_BETTER else "max"
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.3, patience=2)


@dataclass
class Loop:
    """What the generic loop needs from a task: its network, optimiser state and two passes."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator  # drives the training loader's shuffling
    steps: int  # optimiser steps per epoch
    # One training pass; called with on_step(1-based step, loss); returns the mean loss.
    train_epoch: Callable[[Callable[[int, float], None]], float]
    # One validation pass: (validation loss or None, metrics by name).
    validate: Callable[[], tuple[float | None, dict[str, float | None]]]
    # Ends the run before the next epoch when true (e.g. a schedule's time budget is spent).
    should_stop: Callable[[], bool] | None = None


def fit(
    loop: Loop,
    *,
    params: TrainingParams,
    monitor: str,
    store: BlobStore,
    resume_key: str | None,
    hooks: FitHooks,
    meta: dict[str, Any] | None = None,
) -> FitState:
    """Run epochs until ``params.epochs`` or early stopping; resumes from ``resume_key``.

    ``meta`` (a fresh start only; a resumed fit keeps its checkpoint's) is carried in every
    checkpoint; its ``fold`` tags the epoch rows.

    Returns:
        The final state; ``best_state`` holds the best weights on ``monitor`` (the last
        weights if the metric was never defined).
    """
    network = loop.network
    state = FitState(meta=dict(meta or {}))
    if resume_key:
        state = load_checkpoint(
            store,
            resume_key,
            model=network,
            optimizer=loop.optimizer,
            scheduler=loop.scheduler,
            scaler=loop.scaler,
            generator=loop.generator,
        )
    for epoch in range(state.epoch + 1, params.epochs + 1):
        if state.stale >= params.patience:
            break
        if loop.should_stop is not None and loop.should_stop():
            break
        start = time.perf_counter()
        lr = loop.optimizer.param_groups[0]["lr"]
        train_loss = loop.train_epoch(
            lambda step, loss, e=epoch: hooks.on_step(e, step, loop.steps, loss)
        )
        val_loss, metrics = loop.validate()
        value = metrics.get(monitor)
        if isinstance(loop.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if value is not None:
                loop.scheduler.step(value)
        else:
            loop.scheduler.step()
        if improved(value, state.best_value, monitor):
            state.best_value, state.best_epoch, state.stale = value, epoch, 0
            state.best_state = {
                k: v.detach().cpu().clone() for k, v in network.state_dict().items()
            }
        else:
            state.stale += 1
        state.epoch = epoch
        fold = state.meta.get("fold")
        state.history.append(
            {
                **({"fold": fold} if fold is not None else {}),
                "epoch": epoch,
                "train_loss": round(train_loss, 6),
                "val_loss": None if val_loss is None else round(val_loss, 6),
                "val_metrics": metrics,
                "lr": lr,
                "seconds": round(time.perf_counter() - start, 3),
            }
        )
        key = save_checkpoint(
            store,
            model=network,
            optimizer=loop.optimizer,
            scheduler=loop.scheduler,
            scaler=loop.scaler,
            state=state,
            generator=loop.generator,
        )
        if not hooks.on_epoch(state, key):
            raise Cancelled
    if state.best_state is None:  # the monitored metric was never defined: keep the last
        state.best_state = copy.deepcopy({k: v.cpu() for k, v in network.state_dict().items()})
        state.best_epoch = state.epoch
    return state


def make_scaler(params: TrainingParams, device: torch.device) -> torch.amp.GradScaler | None:
    return torch.amp.GradScaler("cuda") if params.amp and device.type == "cuda" else None


def fit_classifier(
    network: nn.Module,
    train_ds: ItemsClassification,
    val_ds: ItemsClassification,
    *,
    params: TrainingParams,
    monitor: str,
    device: torch.device,
    store: BlobStore,
    resume_key: str | None,
    hooks: FitHooks,
    meta: dict[str, Any] | None = None,
) -> FitState:
    """Classification: class-weighted cross-entropy, AdamW, validation AUROC/accuracy/loss."""
    generator = torch.Generator().manual_seed(params.seed)
    # BatchNorm cannot train on a final batch of one image.
    drop_last = len(train_ds) > params.batch_size and len(train_ds) % params.batch_size == 1
    train_loader = DataLoader(
        train_ds, params.batch_size, shuffle=True, generator=generator, drop_last=drop_last
    )
    val_loader = DataLoader(val_ds, max(params.batch_size, 64))
    counts = train_ds.class_counts()
    criterion = make_criterion(
        counts if params.class_weights == "balanced" else None,
        label_smoothing=params.label_smoothing,
    ).to(device)
    lr = params.lr if params.lr is not None else CLASSIFICATION_LR
    optimizer = torch.optim.AdamW(param_groups(network, params.weight_decay), lr=lr)
    scaler = make_scaler(params, device)

    def train_epoch(on_step: Callable[[int, float], None]) -> float:
        return train_one_epoch(
            network, criterion, optimizer, train_loader, device, scaler=scaler, on_step=on_step
        )

    def validate() -> tuple[float | None, dict[str, float | None]]:
        val = evaluate(network, val_loader, device)
        return val.loss, classification_val_metrics(val.probs, val.labels, val.loss)

    loop = Loop(
        network,
        optimizer,
        make_scheduler(optimizer, params, monitor),
        scaler,
        generator,
        len(train_loader),
        train_epoch,
        validate,
    )
    return fit(
        loop,
        params=params,
        monitor=monitor,
        store=store,
        resume_key=resume_key,
        hooks=hooks,
        meta=meta,
    )
