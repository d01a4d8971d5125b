"""Micro-batching across jobs: same outputs as one job at a time, each job its own result.

Jobs go to the `gpu` queue, which no worker of the test stack consumes, so the batches
are run here by the task body with chosen settings (the API and database are real).
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from tests.factories import image_files, labelled_pngs, stack_settings, submit_job


def _queued_single_image_jobs(api: httpx.Client) -> list[str]:
    ids = []
    for path, _ in labelled_pngs():
        response = submit_job(api, image_files(path), queue="gpu")
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def test_batched_outputs_equal_unbatched_and_each_job_finishes(
    api: httpx.Client, stack: Stack
) -> None:
    from worker.context import make_context
    from worker.tasks.infer import run_inference_job

    batched = make_context(stack_settings(stack, max_batch_size=8, max_batch_wait_ms=50))
    single = make_context(stack_settings(stack, max_batch_size=1))

    first = _queued_single_image_jobs(api)
    run_inference_job(batched, uuid.UUID(first[0]), "test@batched")  # one run takes all 8
    together = [api.get(f"/v1/jobs/{j}").json() for j in first]
    assert all(j["status"] == "succeeded" for j in together), together
    assert {j["images"][0]["output"]["timing"]["batch_size"] for j in together} == {8}

    second = _queued_single_image_jobs(api)
    for job_id in second:
        run_inference_job(single, uuid.UUID(job_id), "test@single")
    alone = [api.get(f"/v1/jobs/{j}").json() for j in second]
    assert {j["images"][0]["output"]["timing"]["batch_size"] for j in alone} == {1}

    for a, b in zip(together, alone, strict=True):
        out_a, out_b = a["images"][0]["output"], b["images"][0]["output"]
        assert out_a["probabilities"] == pytest.approx(out_b["probabilities"], abs=1e-5)
        assert out_a["label"] == out_b["label"]
        timing = out_a["timing"]
        assert timing["total_ms"] == pytest.approx(timing["queue_ms"] + timing["compute_ms"])
        assert a["images"][0]["latency_ms"] > 0


def test_cancelled_and_other_model_jobs_are_left_alone(
    api: httpx.Client, stack: Stack, db: sessionmaker[Session]
) -> None:
    from worker.context import make_context
    from worker.tasks.infer import run_inference_job

    ctx = make_context(stack_settings(stack, max_batch_size=8, max_batch_wait_ms=0))
    path = labelled_pngs()[0][0]
    primary, cancelled, big, last = (
        submit_job(api, image_files(*[path] * n), queue="gpu").json()["id"] for n in (1, 1, 8, 1)
    )
    api.post(f"/v1/jobs/{cancelled}/cancel").raise_for_status()
    run_inference_job(ctx, uuid.UUID(primary), "test@batched")
    status = {j: api.get(f"/v1/jobs/{j}").json()["status"] for j in (primary, cancelled, big, last)}
    # The 8-image job does not fit next to the primary; the later 1-image job does.
    assert status == {
        primary: "succeeded",
        cancelled: "cancelled",
        big: "queued",
        last: "succeeded",
    }
    api.post(f"/v1/jobs/{big}/cancel").raise_for_status()  # leave nothing queued behind
