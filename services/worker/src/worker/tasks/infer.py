"""worker.infer: decode a job's images, run its model in batches, store per-image results."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from shared.db.models import JobImage, ModelVersion
from shared.errors import AppError, InvalidImage
from shared.imaging.decode import decode_image
from shared.metrics import IMAGE_LATENCY, IMAGES_PROCESSED, JOB_DURATION, MODEL_LATENCY
from worker import jobs
from worker.context import WorkerContext
from worker.inference.postprocess import classification_output
from worker.inference.runner import LoadedModel

log = logging.getLogger(__name__)
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _prepare(
    ctx: WorkerContext, model: LoadedModel, image: JobImage
) -> tuple[torch.Tensor, dict[str, Any]]:
    spec = model.card.input
    try:
        data = ctx.store.get(image.storage_key)
    except FileNotFoundError:
        raise InvalidImage(f"stored upload {image.filename!r} is missing from the store") from None
    decoded = decode_image(
        data, max_pixels=ctx.settings.max_image_pixels, target_size=spec.native_size or spec.size
    )
    info = {
        "format": decoded.format,
        "width": decoded.original_width,
        "height": decoded.original_height,
        "pixel_spacing": decoded.pixel_spacing,
    }
    return model.preset(decoded.pixels), info


def predict_chunk(
    ctx: WorkerContext, model: LoadedModel, images: Sequence[JobImage], params: dict[str, Any]
) -> list[jobs.ImageOutcome]:
    """Decode each image (errors stay per image), then one forward pass for the chunk."""
    outcomes: list[jobs.ImageOutcome] = []
    ready: list[tuple[JobImage, torch.Tensor, dict[str, Any], float]] = []
    for image in images:
        start = time.perf_counter()
        try:
            tensor, info = _prepare(ctx, model, image)
        except AppError as exc:
            elapsed = (time.perf_counter() - start) * 1000
            outcomes.append(jobs.ImageOutcome(image.id, elapsed, error=exc))
            continue
        ready.append((image, tensor, info, (time.perf_counter() - start) * 1000))
    if not ready:
        return outcomes
    start = time.perf_counter()
    probabilities = model.probabilities(torch.stack([t for _, t, _, _ in ready])).tolist()
    forward_ms = (time.perf_counter() - start) * 1000 / len(ready)
    threshold = params.get("threshold")
    for (image, _, info, prep_ms), probs in zip(ready, probabilities, strict=True):
        output = classification_output(probs, model.card, threshold=threshold)
        output["image"] = info
        outcomes.append(jobs.ImageOutcome(image.id, prep_ms + forward_ms, output=output))
    name = model.card.name
    for o in outcomes:
        IMAGES_PROCESSED.labels(name, "failed" if o.error else "succeeded").inc()
        if not o.error:
            MODEL_LATENCY.labels(name).observe(forward_ms / 1000)
            IMAGE_LATENCY.labels(name).observe(o.latency_ms / 1000)
    return outcomes


def run_inference_job(ctx: WorkerContext, job_id: uuid.UUID, worker: str) -> None:
    with ctx.sessions() as session:
        job = jobs.claim(session, job_id, worker)
        if job is None:
            log.info("job %s is not queued or running; nothing to do", job_id)
            return
        params = dict(job.params)
        version = session.scalar(
            select(ModelVersion)
            .where(ModelVersion.id == job.model_version_id)
            .options(selectinload(ModelVersion.model))
        )
        assert version is not None  # foreign key
        try:
            model = ctx.models.get(version)
        except AppError as exc:
            jobs.fail(session, job_id, exc)
            return
        pending = jobs.pending_images(session, job_id)
        log.info(
            "job running",
            extra={"model": version.ref, "images": len(pending), "attempt": job.attempts},
        )
        for chunk in _chunks(pending, ctx.settings.max_batch_size):
            if not jobs.is_running(session, job_id):
                log.info("job %s was cancelled; stopping", job_id)
                return
            jobs.save_outcomes(session, predict_chunk(ctx, model, chunk, params))
            session.commit()
        final = jobs.finish(session, job_id)
        if final is not None:
            JOB_DURATION.labels(version.model.name, final[0]).observe(final[1])
            log.info("job finished", extra={"status": final[0], "seconds": round(final[1], 3)})
