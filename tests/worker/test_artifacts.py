"""Job artifacts: stored by the worker helper, listed and downloaded through the API."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.config import Settings
from shared.db.models import Artifact, Job
from shared.storage import BlobStore
from tests.conftest import KeyFactory, client_for, wait_for_job
from tests.factories import image_files, labelled_pngs, submit_job


def stack_store(stack: Stack) -> BlobStore:
    settings = Settings(data_dir=Path(stack.env["MEDIMG_DATA_DIR"]))
    return BlobStore(settings.store_path)


def test_saved_artifact_is_listed_downloadable_idempotent_and_tenant_private(
    api: httpx.Client, db: sessionmaker[Session], stack: Stack, make_key: KeyFactory
) -> None:
    from worker.artifacts import save_job_png

    job = wait_for_job(api, submit_job(api, image_files(labelled_pngs()[0][0])).json()["id"])
    job_id = uuid.UUID(job["id"])
    pixels = np.zeros((5, 7, 3), dtype=np.uint8)
    pixels[1:3, 2:5] = (255, 0, 0)
    with db() as s:
        tenant_id = s.scalar(select(Job.tenant_id).where(Job.id == job_id))
        assert tenant_id is not None
        for _ in range(2):  # a redelivered task writes the same artifact again
            save_job_png(
                s,
                stack_store(stack),
                job_id=job_id,
                tenant_id=tenant_id,
                name="test-0.png",
                pixels=pixels,
            )
            s.commit()
        count = s.scalar(select(func.count()).where(Artifact.owner_id == job_id))
    assert count == 1

    listed = api.get(f"/v1/jobs/{job_id}/artifacts").raise_for_status().json()["items"]
    assert [(a["name"], a["content_type"]) for a in listed] == [("test-0.png", "image/png")]
    download = api.get(listed[0]["url"])
    assert download.status_code == 200 and download.headers["content-type"] == "image/png"
    assert len(download.content) == listed[0]["size_bytes"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(download.content))), pixels)

    missing = api.get(f"/v1/jobs/{job_id}/artifacts/nothing.png")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(
        "application/problem+json"
    )
    with client_for(stack, make_key(tenant=f"other-{uuid.uuid4().hex[:6]}")) as other:
        assert other.get(f"/v1/jobs/{job_id}/artifacts").status_code == 404
        assert other.get(f"/v1/jobs/{job_id}/artifacts/test-0.png").status_code == 404
