"""What detection and segmentation training jobs share around their task-specific parts.

A job of either task reads its dataset version, starts a network (ImageNet, random or a
registered parent of the same architecture and labels), runs the shared fit loop, scores the
served fp16 weights on test (and the production version, when promotion is asked), and
publishes a card with curves and TensorBoard events. The tasks differ only in how a network
is built and loaded, how a split is scored and what the card says; those come in as
functions, so the sequence itself is written once.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.errors import InvalidRequest
from shared.ml.architectures import load_state_dict
from shared.ml.pretrained import PretrainedWeightsMissing
from shared.registry import resolve_model_version
from shared.schemas.models import ModelCard, TrainingRecord
from shared.schemas.training import TrainingParams
from trainer.card import save_weights_fp16
from trainer.context import JobSpec, TrainerContext, hardware, pick_device
from trainer.engine import seed_everything
from trainer.fit import FitHooks, Loop, fit
from trainer.fit_state import FitState
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

# (architecture, pretrained) -> a network with this job's labels and input.
Build = Callable[[str, bool], nn.Module]
# Loads a float32 state dict into a network built by `Build`, strictly.
Load = Callable[[nn.Module, dict[str, torch.Tensor]], Any]
Scores = dict[str, float | None]


@dataclass
class JobData:
    started: float  # perf_counter at the start: the card's wall time
    params: TrainingParams
    device: torch.device
    provenance: Any
    dataset_name: str
    labels: list[str]
    refs: dict[str, list[ItemRef]]

    @property
    def n_images(self) -> dict[str, int]:
        return {name: len(items) for name, items in self.refs.items()}


def prepare(ctx: TrainerContext, job: JobSpec) -> JobData:
    """Parameters, device, seeds, the version's provenance, labels and items per split."""
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
    return JobData(started, params, device, provenance, dataset_name, labels, refs)


def start_network(
    ctx: TrainerContext,
    job: JobSpec,
    labels: list[str],
    build: Build,
    load: Load,
    *,
    noun: str,
    pretrained_start: str,
) -> tuple[nn.Module, str]:
    """The network the job starts from and how it was started, in words.

    Raises:
        InvalidRequest: ImageNet weights missing, or a parent of another architecture or
            other labels (its weights would not fit).
    """
    if job.start_from in ("random", "imagenet"):
        pretrained = job.start_from == "imagenet"
        try:
            network = build(job.architecture, pretrained)
        except PretrainedWeightsMissing as exc:
            raise InvalidRequest(exc.detail) from None
        return network, pretrained_start if pretrained else "random initialisation"
    with ctx.sessions() as session:
        parent = resolve_model_version(session, job.start_from, job.tenant_id)
        parent_ref, parent_labels, arch = parent.ref, list(parent.labels), parent.architecture
        path = ctx.store.path(parent.weights_key)
    if arch != job.architecture or parent_labels != labels:
        raise InvalidRequest(
            f"{parent_ref} ({arch}, labels {parent_labels}) cannot start this job: continuing a "
            f"{noun} needs the same architecture and labels"
        )
    network = build(job.architecture, False)
    load(network, load_state_dict(str(path)))
    return network, f"continued from {parent_ref}"


def incumbent(
    ctx: TrainerContext,
    job: JobSpec,
    labels: list[str],
    task: str,
    score: Callable[[str, ModelCard, Path], float | None],
) -> Incumbent | None:
    """The production version and its score on this job's test split (``score(architecture,
    card, weights path)``); no score when its task or labels differ from this job's."""
    with ctx.sessions() as session:
        version = production_version(session, job.model_name)
        if version is None:
            return None
        ref, arch, same = version.ref, version.architecture, list(version.labels) == labels
        card = ModelCard.model_validate(version.card)
        path = ctx.store.path(version.weights_key)
    if not same or card.task != task:
        return Incumbent(ref, None)
    return Incumbent(ref, score(arch, card, path))


def run_fit(ctx: TrainerContext, job: JobSpec, reporter: Reporter, loop: Loop) -> FitState:
    params = TrainingParams.model_validate(job.params)
    return fit(
        loop,
        params=params,
        monitor=job.monitor,
        store=ctx.store,
        resume_key=job.checkpoint_key,
        hooks=FitHooks(on_step=reporter.on_step, on_epoch=reporter.on_epoch),
    )


def training_record(
    job: JobSpec,
    data: JobData,
    state: FitState,
    *,
    lr: float,
    start: str,
    train_seconds: float,
    extra: dict[str, Any],
) -> TrainingRecord:
    """The card's training section: the common facts, then the task's ``extra`` ones."""
    return TrainingRecord(
        command=f"POST /v1/training-jobs (job {job.id})",
        epochs=len(state.history),
        wall_time_s=round(time.perf_counter() - data.started, 1),
        hardware=hardware(data.device),
        seed=data.params.seed,
        extra={
            "params": {**data.params.model_dump(), "lr": data.params.lr or lr},
            **extra,
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
    )


@dataclass(frozen=True)
class Finish:
    """The task's parts of the end of a job."""

    build: Build
    load: Load
    # The served network -> (test report for the card, monitored values by name).
    evaluate_test: Callable[[nn.Module], tuple[dict[str, Any], Scores]]
    # Called only when the job asks for promotion.
    incumbent: Callable[[], Incumbent | None]
    # (test report, monitored test values) -> the card.
    card: Callable[[dict[str, Any], Scores], ModelCard]
    readme: Callable[[ModelCard], str] | None = None


def finish(
    ctx: TrainerContext,
    job: JobSpec,
    reporter: Reporter,
    data: JobData,
    state: FitState,
    task: Finish,
) -> str:
    """Score exactly what will be served (the fp16 weights, loaded as a worker loads them),
    write the card and artifacts and register the version; returns its ref."""
    reporter.phase("evaluating", state)
    with tempfile.TemporaryDirectory(prefix="medimg-train-") as folder:
        weights = Path(folder) / "weights.pt"
        assert state.best_state is not None
        save_weights_fp16(state.best_state, weights)
        served = task.build(job.architecture, False)
        task.load(served, load_state_dict(str(weights)))
        served.to(data.device)
        test, test_monitor = task.evaluate_test(served)
        rival = task.incumbent() if job.promote else None
        card = task.card(test, test_monitor)
        artifacts = {"curves.png": ("image/png", curves_png(state.history, job.monitor))}
        if task.readme is not None:
            artifacts["model_card.md"] = ("text/markdown", task.readme(card).encode())
        events = tensorboard_events(
            state.history, {k: v for k, v in test_monitor.items() if v is not None}
        )
        artifacts[f"events.out.tfevents.{job.id}"] = ("application/octet-stream", events)
        reporter.artifacts(artifacts)
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
            incumbent=rival,
            progress=reporter.final(state),
        )
