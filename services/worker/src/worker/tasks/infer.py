"""worker.infer: decode a job's images, run its model in batches, store per-image results.

Micro-batching: a job with fewer images than MEDIMG_MAX_BATCH_SIZE also claims queued
jobs of the same model version (worker.batching), waiting up to MEDIMG_MAX_BATCH_WAIT_MS
for more, so single-image jobs share forward passes (MEDIMG_CROSS_JOB_BATCHING=false
turns this off). Each job still gets its own results, operating point, artifacts and
final status.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from shared.db.base import utcnow
from shared.db.models import Job, JobImage, ModelVersion
from shared.errors import AppError, InvalidImage
from shared.imaging.decode import decode_image
from shared.operating_points import operating_point
from shared.prometheus_metrics import IMAGE_LATENCY, IMAGES_PROCESSED, JOB_DURATION, MODEL_LATENCY
from shared.schemas.jobs import JobParams
from shared.schemas.models import OperatingPoint
from worker import batching, jobs
from worker.artifacts import artifact_url, encode_png, save_artifact
from worker.context import WorkerContext
from worker.inference import gradcam
from worker.inference.detection import LoadedDetector, annotated_image
from worker.inference.ensemble import LoadedEnsemble, ensemble_outputs
from worker.inference.postprocess import classification_output
from worker.inference.runner import LoadedModel
from worker.inference.segmentation import LoadedSegmenter
from worker.inference.segmentation_results import segmentation_artifacts

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class JobWork:
    """One claimed job inside a (possibly shared) batch."""

    job_id: uuid.UUID
    tenant_id: uuid.UUID
    created_at: datetime
    params: JobParams
    point: OperatingPoint | None
    claimed_at: datetime = field(default_factory=utcnow)

    @classmethod
    def of(cls, job: Job, model: LoadedModel | LoadedEnsemble) -> JobWork:
        params = JobParams.model_validate(job.params)
        if model.card.task == "segmentation":  # threshold is per pixel there, not a point
            return cls(job.id, job.tenant_id, job.created_at, params, None)
        point = operating_point(
            model.card, threshold=params.threshold, target_sensitivity=params.target_sensitivity
        )
        return cls(job.id, job.tenant_id, job.created_at, params, point)

    @property
    def queue_ms(self) -> float:
        return (self.claimed_at - self.created_at).total_seconds() * 1000


@dataclass(frozen=True)
class WorkItem:
    work: JobWork
    image: JobImage


@dataclass(frozen=True)
class PendingArtifact:
    job_id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    content_type: str
    data: bytes


@dataclass
class ChunkResult:
    outcomes: list[jobs.ImageOutcome] = field(default_factory=list)
    artifacts: list[PendingArtifact] = field(default_factory=list)


@dataclass
class _Ready:
    item: WorkItem
    pixels: dict[int, np.ndarray]
    info: dict[str, Any]
    prep_ms: float


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _decode(
    ctx: WorkerContext, sizes: set[int], image: JobImage
) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Decode once per distinct input size the model (or its members) needs."""
    try:
        data = ctx.store.get(image.storage_key)
    except FileNotFoundError:
        raise InvalidImage(f"stored upload {image.filename!r} is missing from the store") from None
    pixels: dict[int, np.ndarray] = {}
    info: dict[str, Any] = {}
    for size in sorted(sizes):
        decoded = decode_image(data, max_pixels=ctx.settings.max_image_pixels, target_size=size)
        pixels[size] = decoded.pixels
        info = {
            "format": decoded.format,
            "width": decoded.original_width,
            "height": decoded.original_height,
            "pixel_spacing": decoded.pixel_spacing,
        }
    return pixels, info


def _explain(model: LoadedModel, ready: _Ready, label: str) -> PendingArtifact:
    """Grad-CAM of the predicted label, over the image at its uploaded size."""
    pixels = ready.pixels[model.decode_size]
    layer = gradcam.target_layer(model.network, model.card.architecture)
    cam = gradcam.grad_cam(
        model.network, layer, model.preset(pixels), model.card.labels.index(label)
    )
    height, width = pixels.shape[:2]
    heat = gradcam.heatmap_in_image(cam, model.card.input, height, width)
    rgb = gradcam.to_original_size(
        gradcam.overlay(pixels, heat), ready.info["width"], ready.info["height"]
    )
    work = ready.item.work
    return PendingArtifact(
        work.job_id, work.tenant_id, f"gradcam-{ready.item.image.index}.png", "image/png",
        encode_png(rgb),
    )  # fmt: skip


def _annotate(model: LoadedDetector, ready: _Ready, output: dict[str, Any]) -> PendingArtifact:
    """The uploaded image with its detected boxes drawn."""
    rgb = annotated_image(ready.pixels[model.decode_size], ready.info, output, model.card.labels)
    work = ready.item.work
    name = f"boxes-{ready.item.image.index}.png"
    return PendingArtifact(work.job_id, work.tenant_id, name, "image/png", encode_png(rgb))


def predict_chunk(
    ctx: WorkerContext, model: LoadedModel | LoadedEnsemble, items: Sequence[WorkItem]
) -> ChunkResult:
    """Decode each image (errors stay per image), then one forward pass for the chunk."""
    result = ChunkResult()
    ready: list[_Ready] = []
    for item in items:
        start = time.perf_counter()
        try:
            pixels, info = _decode(ctx, model.decode_sizes, item.image)
        except AppError as exc:
            elapsed = (time.perf_counter() - start) * 1000
            result.outcomes.append(jobs.ImageOutcome(item.image.id, elapsed, error=exc))
            continue
        ready.append(_Ready(item, pixels, info, (time.perf_counter() - start) * 1000))
    if not ready:
        return result
    start = time.perf_counter()
    if isinstance(model, LoadedSegmenter):
        return _segment(ctx, model, ready, result)
    outputs = _forward(model, ready)
    forward_ms = (time.perf_counter() - start) * 1000 / len(ready)
    for r, output in zip(ready, outputs, strict=True):
        compute_ms = r.prep_ms + forward_ms
        if r.item.work.params.explain == "gradcam" and isinstance(model, LoadedModel):
            explain_start = time.perf_counter()
            artifact = _explain(model, r, output["label"])
            compute_ms += (time.perf_counter() - explain_start) * 1000
            result.artifacts.append(artifact)
            output["artifacts"] = {"gradcam": artifact_url(artifact.job_id, artifact.name)}
        if r.item.work.params.annotate and isinstance(model, LoadedDetector):
            artifact = _annotate(model, r, output)
            result.artifacts.append(artifact)
            output["artifacts"] = {"boxes": artifact_url(artifact.job_id, artifact.name)}
        output["image"] = r.info
        output["timing"] = {
            "queue_ms": round(r.item.work.queue_ms, 3),
            "compute_ms": round(compute_ms, 3),
            "total_ms": round(r.item.work.queue_ms + compute_ms, 3),
            "batch_size": len(ready),
        }
        result.outcomes.append(jobs.ImageOutcome(r.item.image.id, compute_ms, output=output))
    _observe(model.card.name, result.outcomes, forward_ms)
    return result


def _segment(
    ctx: WorkerContext, model: LoadedSegmenter, ready: list[_Ready], result: ChunkResult
) -> ChunkResult:
    """Masks in each uploaded image's grid; overlay, label map and (DICOM) SEG artifacts."""
    start = time.perf_counter()
    outputs, masks = model.segment(
        [r.pixels[model.decode_size] for r in ready],
        [r.info for r in ready],
        [r.item.work.params for r in ready],
    )
    forward_ms = (time.perf_counter() - start) * 1000 / len(ready)
    for r, output, mask in zip(ready, outputs, masks, strict=True):
        extra_start = time.perf_counter()
        work, image = r.item.work, r.item.image
        output["artifacts"] = {}
        for name, content_type, data in segmentation_artifacts(
            ctx.store.get(image.storage_key), r.pixels[model.decode_size], r.info, mask,
            output, model, image.index, work.job_id,
        ):  # fmt: skip
            result.artifacts.append(
                PendingArtifact(work.job_id, work.tenant_id, name, content_type, data)
            )
            output["artifacts"][name.split("-", 1)[0]] = artifact_url(work.job_id, name)
        compute_ms = r.prep_ms + forward_ms + (time.perf_counter() - extra_start) * 1000
        output["image"] = r.info
        output["timing"] = {
            "queue_ms": round(work.queue_ms, 3),
            "compute_ms": round(compute_ms, 3),
            "total_ms": round(work.queue_ms + compute_ms, 3),
            "batch_size": len(ready),
        }
        result.outcomes.append(jobs.ImageOutcome(image.id, compute_ms, output=output))
    _observe(model.card.name, result.outcomes, forward_ms)
    return result


def _forward(model: LoadedModel | LoadedEnsemble, ready: list[_Ready]) -> list[dict[str, Any]]:
    if isinstance(model, LoadedDetector):
        return model.detect(
            [r.pixels[model.decode_size] for r in ready],
            [r.info for r in ready],
            [r.item.work.params for r in ready],
        )
    if isinstance(model, LoadedEnsemble):
        member_probs = model.member_probabilities([r.pixels for r in ready])
        # Jobs in one batch may ask for different operating points: combine per image.
        return [
            ensemble_outputs(model, member_probs[:, i : i + 1], r.item.work.point)[0]
            for i, r in enumerate(ready)
        ]
    batch = torch.stack([model.preset(r.pixels[model.decode_size]) for r in ready])
    probabilities = model.probabilities(batch).tolist()
    return [
        classification_output(p, model.card, r.item.work.point)
        for r, p in zip(ready, probabilities, strict=True)
    ]


def _observe(name: str, outcomes: list[jobs.ImageOutcome], forward_ms: float) -> None:
    for o in outcomes:
        IMAGES_PROCESSED.labels(name, "failed" if o.error else "succeeded").inc()
        if not o.error:
            MODEL_LATENCY.labels(name).observe(forward_ms / 1000)
            IMAGE_LATENCY.labels(name).observe(o.latency_ms / 1000)


def _save(session: Session, ctx: WorkerContext, result: ChunkResult) -> None:
    jobs.save_outcomes(session, result.outcomes)
    for a in result.artifacts:
        save_artifact(
            session, ctx.store, "job", a.job_id, a.tenant_id, a.name, a.content_type, a.data
        )
    session.commit()


def _load_version(session: Session, version_id: uuid.UUID) -> ModelVersion:
    version = session.scalar(
        select(ModelVersion)
        .where(ModelVersion.id == version_id)
        .options(selectinload(ModelVersion.model))
    )
    assert version is not None  # foreign key
    return version


def run_inference_job(ctx: WorkerContext, job_id: uuid.UUID, worker: str) -> None:
    with ctx.sessions() as session:
        job = jobs.claim(session, job_id, worker)
        if job is None:
            log.info("job %s is not queued or running; nothing to do", job_id)
            return
        version = _load_version(session, job.model_version_id)
        try:
            model = ctx.models.get(version, session)
            primary = JobWork.of(job, model)
        except AppError as exc:
            jobs.fail(session, job_id, exc)
            return
        items = [WorkItem(primary, image) for image in jobs.pending_images(session, job_id)]
        works = [primary]
        room = ctx.settings.max_batch_size - len(items)
        if room > 0 and ctx.settings.cross_job_batching:
            for companion, images in batching.gather(
                session, ctx.settings, job=job, room=room, worker=worker
            ):
                work = _companion_work(session, companion, model)
                if work is not None:
                    works.append(work)
                    items.extend(WorkItem(work, image) for image in images)
        log.info(
            "job running",
            extra={"model": version.ref, "images": len(items), "jobs": len(works),
                   "attempt": job.attempts},
        )  # fmt: skip
        try:
            _run_items(session, ctx, model, items)
        except Exception:
            # The caller fails the primary job; companions must not wait for a lease to expire.
            for work in works[1:]:
                jobs.fail(session, work.job_id, AppError("the worker failed on a shared batch"))
            raise
        for work in works:
            final = jobs.finish(session, work.job_id)
            if final is not None:
                JOB_DURATION.labels(version.model.name, final[0]).observe(final[1])
                log.info(
                    "job finished",
                    extra={"job": str(work.job_id), "status": final[0],
                           "seconds": round(final[1], 3)},
                )  # fmt: skip


def _companion_work(
    session: Session, job: Job, model: LoadedModel | LoadedEnsemble
) -> JobWork | None:
    try:
        return JobWork.of(job, model)
    except AppError as exc:  # parameters the API should have refused; fail just that job
        jobs.fail(session, job.id, exc)
        return None


def _run_items(
    session: Session,
    ctx: WorkerContext,
    model: LoadedModel | LoadedEnsemble,
    items: list[WorkItem],
) -> None:
    for chunk in _chunks(items, ctx.settings.max_batch_size):
        # Cancelled meanwhile: skip its images; finish() will leave it cancelled.
        live = {j for j in {i.work.job_id for i in chunk} if jobs.is_running(session, j)}
        chunk = [i for i in chunk if i.work.job_id in live]
        if chunk:
            _save(session, ctx, predict_chunk(ctx, model, chunk))
