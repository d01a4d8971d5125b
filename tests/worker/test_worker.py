"""Worker behaviour against the real database: redelivery, cancellation, broken models."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.config import Settings
from shared.db.models import ImageStatus, Job, JobImage, JobStatus, Model, ModelVersion
from tests.conftest import wait_for_job
from tests.factories import MODEL, image_files, labelled_pngs, submit_job


def _stack_settings(stack: Stack) -> Settings:
    env = stack.env
    return Settings(
        DATABASE_URL=env["DATABASE_URL"],
        REDIS_URL=env["REDIS_URL"],
        data_dir=Path(env["MEDIMG_DATA_DIR"]),
    )


def test_redelivered_job_recomputes_only_missing_results(
    api: httpx.Client, db: sessionmaker[Session], stack: Stack
) -> None:
    from worker.context import make_context
    from worker.tasks.infer import run_inference_job

    ctx = make_context(_stack_settings(stack))
    paths = [p for p, _ in labelled_pngs()[:3]]
    job = wait_for_job(api, submit_job(api, image_files(*paths)).json()["id"])
    job_id = uuid.UUID(job["id"])
    with db() as s:  # simulate a worker that died after storing two of three results
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.RUNNING))
        s.execute(
            update(JobImage)
            .where(JobImage.job_id == job_id, JobImage.index == 2)
            .values(status=ImageStatus.PENDING, output=None)
        )
        s.commit()

    run_inference_job(ctx, job_id, "test@redelivery")
    run_inference_job(ctx, job_id, "test@redelivery")  # a duplicate delivery changes nothing

    again = api.get(f"/v1/jobs/{job_id}").json()
    assert again["status"] == "succeeded" and again["attempts"] == job["attempts"] + 1
    with db() as s:
        rows = s.scalars(select(JobImage).where(JobImage.job_id == job_id)).all()
    assert len(rows) == 3 and all(r.status == ImageStatus.SUCCEEDED for r in rows)
    for before, after in zip(job["images"][:2], again["images"][:2], strict=True):
        assert before["finished_at"] == after["finished_at"]  # untouched
    assert (
        again["images"][2]["output"]["probabilities"] == job["images"][2]["output"]["probabilities"]
    )


def test_cancelled_queued_job_never_runs(api: httpx.Client) -> None:
    paths = [p for p, _ in labelled_pngs()]
    busy = submit_job(api, image_files(*(paths * 8))).json()  # keeps the single worker busy
    queued = submit_job(api, image_files(paths[0])).json()
    cancelled = api.post(f"/v1/jobs/{queued['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    wait_for_job(api, busy["id"])
    final = wait_for_job(api, queued["id"])
    assert final["status"] == "cancelled"
    assert all(i["status"] == "pending" and i["output"] is None for i in final["images"])


def test_missing_weights_fail_the_job_clearly(api: httpx.Client, db: sessionmaker[Session]) -> None:
    name = f"broken-{uuid.uuid4().hex[:8]}"
    with db() as s:
        good = s.scalar(select(Model).where(Model.name == MODEL))
        assert good is not None
        template = good.versions[-1]
        broken = Model(name=name, task="classification", description="weights deleted")
        s.add(broken)
        s.add(
            ModelVersion(
                model=broken,
                version=1,
                architecture=template.architecture,
                labels=template.labels,
                input_spec=template.input_spec,
                card=template.card,
                weights_key="models/00/does-not-exist.pt",
                weights_sha256="0" * 64,
                queue="cpu",
            )
        )
        s.commit()
    job = wait_for_job(
        api, submit_job(api, image_files(labelled_pngs()[0][0]), model=name).json()["id"]
    )
    assert job["status"] == "failed"
    assert job["error"]["type"] == "model-unavailable"
    assert "missing from the model store" in job["error"]["detail"]
    assert job["model"]["ref"] == f"{name}:1"
