"""Issue 10 item 5: PHI can be deleted, and deleted means gone from the database and the store.

Each test searches every table (as text) and the blob store for what it deleted. Blobs are
aged past the deletion grace period first (os.utime): younger ones are deliberately left to
the orphan sweep, since a concurrent upload of the same bytes may not have committed yet.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.db.base import Base
from shared.deletion import blob_key_columns, referenced
from tests.api.test_datasets import imported
from tests.conftest import KeyFactory, client_for, wait_for_job
from tests.fixtures.datasets import pneumonia_tiny_zip

MODEL = "pneumonia-resnet18"
DAY = 86_400


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 40), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _tenant_client(stack: Stack, make_key: KeyFactory, *scopes: str) -> httpx.Client:
    name = f"deletion-{uuid.uuid4().hex[:8]}"
    return client_for(stack, make_key(tenant=name, scopes=scopes or ("admin",)))


def _finished_job(client: httpx.Client, png: bytes, **form: str) -> dict[str, Any]:
    files = [("files", ("scan.png", png, "image/png"))]
    response = client.post("/v1/jobs", data={"model": MODEL, **form}, files=files)
    assert response.status_code == 202, response.text
    return wait_for_job(client, response.json()["id"])


def _store_dir(stack: Stack) -> Path:
    return stack.config.data_dir / "store"


def _blob_keys_mentioning(db: sessionmaker[Session], needle: str) -> set[str]:
    """Blob keys held by rows whose text mentions `needle` (an id)."""
    keys: set[str] = set()
    with db() as session:
        for column in blob_key_columns():
            table = column.table
            rows = session.execute(
                text(f'SELECT "{column.name}" FROM "{table.name}" t WHERE t::text LIKE :n'),
                {"n": f"%{needle}%"},
            )
            keys.update(k for (k,) in rows if k)
    return keys


def _tables_mentioning(db: sessionmaker[Session], needle: str) -> dict[str, int]:
    """Rows of every table but the audit log whose text contains `needle`."""
    found = {}
    with db() as session:
        for table in Base.metadata.sorted_tables:
            if table.name == "audit_event":
                continue
            n = session.execute(
                text(f'SELECT count(*) FROM "{table.name}" t WHERE t::text LIKE :n'),
                {"n": f"%{needle}%"},
            ).scalar_one()
            if n:
                found[table.name] = n
    return found


def _age(stack: Stack, keys: set[str]) -> None:
    old = time.time() - 2 * DAY
    for key in keys:
        path = _store_dir(stack) / key
        if path.exists():  # a dataset's upload zip is already gone after its import
            os.utime(path, (old, old))


def _audit(api: httpx.Client, action: str, resource_id: str) -> list[dict[str, Any]]:
    params = {"action": action, "resource_id": resource_id}
    items: list[dict[str, Any]] = api.get("/v1/audit", params=params).json()["items"]
    return items


def test_deleting_a_job_removes_it_from_the_database_and_the_store(
    stack: Stack, make_key: KeyFactory, db: sessionmaker[Session], api: httpx.Client
) -> None:
    with _tenant_client(stack, make_key) as client:
        job = _finished_job(client, _png(1), explain="gradcam")
        assert job["status"] == "succeeded"
        keys = _blob_keys_mentioning(db, job["id"])
        assert len(keys) >= 2, keys  # the upload and the Grad-CAM overlay
        _age(stack, keys)
        deleted = client.delete(f"/v1/jobs/{job['id']}")
        assert deleted.status_code == 200, deleted.text
        body = deleted.json()
        assert body["rows"]["job"] == 1 and body["rows"]["job_image"] == 1
        assert body["blobs_removed"] == len(keys)
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 404
    assert _tables_mentioning(db, job["id"]) == {}
    assert not [k for k in keys if (_store_dir(stack) / k).exists()]
    (event,) = _audit(api, "job.delete", job["id"])
    assert event["detail"]["rows"]["job"] == 1


def test_a_blob_shared_with_another_tenant_survives(
    stack: Stack, make_key: KeyFactory, db: sessionmaker[Session]
) -> None:
    png = _png(2)
    with (
        _tenant_client(stack, make_key) as a,
        _tenant_client(stack, make_key) as b,
    ):
        job_a, job_b = _finished_job(a, png), _finished_job(b, png)
        shared_keys = _blob_keys_mentioning(db, job_a["id"]) & _blob_keys_mentioning(
            db, job_b["id"]
        )
        assert shared_keys, "identical uploads share one content-addressed blob"
        _age(stack, shared_keys)
        body = a.delete(f"/v1/jobs/{job_a['id']}").json()
        assert body["blobs_still_referenced"] >= 1
        assert all((_store_dir(stack) / k).exists() for k in shared_keys)
        preview = b.get(f"/v1/jobs/{job_b['id']}/images/0/preview.png")
        assert preview.status_code == 200 and preview.content.startswith(b"\x89PNG")


def test_an_active_job_is_not_deleted_until_cancelled(stack: Stack, make_key: KeyFactory) -> None:
    files = [("files", ("scan.png", _png(3), "image/png"))]
    with _tenant_client(stack, make_key) as client:
        # No gpu worker runs in the test stack: the job stays queued.
        job = client.post("/v1/jobs", data={"model": MODEL, "queue": "gpu"}, files=files).json()
        refused = client.delete(f"/v1/jobs/{job['id']}")
        assert refused.status_code == 409
        assert refused.headers["content-type"] == "application/problem+json"
        assert "cancel it first" in refused.json()["detail"]
        client.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status()
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 200


def test_retention_deletes_old_final_jobs(
    stack: Stack, make_key: KeyFactory, db: sessionmaker[Session], api: httpx.Client
) -> None:
    with _tenant_client(stack, make_key) as client:
        assert client.patch("/v1/tenant", json={"retention_days": 0}).status_code == 422
        updated = client.patch("/v1/tenant", json={"retention_days": 1})
        assert updated.status_code == 200 and updated.json()["retention_days"] == 1
        old, recent = _finished_job(client, _png(4)), _finished_job(client, _png(5))
        with db() as session:
            session.execute(
                text("UPDATE job SET finished_at = now() - interval '2 days' WHERE id = :id"),
                {"id": old["id"]},
            )
            session.commit()
        deadline = time.monotonic() + 60  # housekeeping runs every second in the test stack
        while client.get(f"/v1/jobs/{old['id']}").status_code != 404:
            assert time.monotonic() < deadline, "retention did not delete the old job"
            time.sleep(0.5)
        assert client.get(f"/v1/jobs/{recent['id']}").status_code == 200
    assert _tables_mentioning(db, old["id"]) == {}
    (event,) = _audit(api, "job.delete", old["id"])
    assert event["detail"]["reason"] == "retention"


def test_deleting_a_dataset_version_removes_its_items_and_blobs(
    stack: Stack, make_key: KeyFactory, db: sessionmaker[Session]
) -> None:
    with _tenant_client(stack, make_key, "train") as client:
        version = imported(client, pneumonia_tiny_zip(), "to-delete")
        assert version["status"] == "ready"
        dataset_id = version["dataset_id"]
        with db() as session:
            version_id = str(
                session.execute(
                    text("SELECT id FROM dataset_version WHERE dataset_id = :d AND version = :v"),
                    {"d": dataset_id, "v": version["version"]},
                ).scalar_one()
            )
        keys = _blob_keys_mentioning(db, version_id)
        assert len(keys) >= 60  # the items (and the upload, if still referenced)
        _age(stack, keys)
        present = {k for k in keys if (_store_dir(stack) / k).exists()}  # not the used zip
        url = f"/v1/datasets/{dataset_id}/versions/{version['version']}"
        deleted = client.delete(url)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["rows"]["dataset_item"] == 60
        assert client.get(url).status_code == 404
    assert _tables_mentioning(db, version_id) == {}
    # Other tests import the same fixture images (content-addressed, shared blobs): exactly
    # those still referenced by another row stay, every other blob of the version is gone.
    with db() as session:
        still_used = referenced(session, keys)
    remaining = {k for k in keys if (_store_dir(stack) / k).exists()}
    assert remaining == still_used & present, f"{len(remaining - still_used)} unreferenced left"
    assert deleted.json()["blobs_still_referenced"] == len(still_used)


def test_operator_deletes_a_whole_tenant(
    stack: Stack, make_key: KeyFactory, db: sessionmaker[Session], api: httpx.Client
) -> None:
    name = f"leaving-{uuid.uuid4().hex[:8]}"
    key = make_key(tenant=name, scopes=("admin",))
    with client_for(stack, key) as client:
        job = _finished_job(client, _png(6))
        me = client.get("/v1/me").json()
        tenant_id = me["tenant_id"]
        # A tenant admin may not delete tenants, not even its own.
        assert client.delete(f"/v1/tenants/{tenant_id}").status_code == 403
    deleted = api.delete(f"/v1/tenants/{tenant_id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["rows"]["tenant"] == 1
    with client_for(stack, key) as client:
        assert client.get("/v1/me").status_code == 401
    assert _tables_mentioning(db, tenant_id) == {}
    assert _tables_mentioning(db, job["id"]) == {}
    assert _audit(api, "tenant.delete", tenant_id)
