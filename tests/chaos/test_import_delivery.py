"""Dataset imports are leased and reconciled like jobs (issue 11 item 7).

A lost import message used to leave its version `importing` forever: here the message is
deleted from Valkey while the dataset worker is told to stop consuming, and the API's
reconciler pass must re-send it so the same worker imports the version.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared import leases
from shared.datasets.importer import run_import
from shared.db.base import utcnow
from shared.db.models import DatasetStatus, DatasetVersion
from shared.db.session import make_async_engine, make_async_sessionmaker
from shared.queueing import make_celery, queue_keys
from shared.storage import BlobStore
from shared.tasks import Queue
from tests.conftest import KeyFactory, client_for
from tests.factories import bare_dataset_version, stack_settings, upload_dataset, wait_for_import
from tests.fixtures.datasets import pneumonia_tiny_zip

DATASET_WORKER = f"datasets@{socket.gethostname()}"  # cli.services.dataset_worker's node


@pytest.fixture(scope="module")
def trainer(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    return client_for(stack, make_key(tenant="import-leases", scopes=("train",)))


def _waiting_messages(redis_url: str) -> list[bytes]:
    with SyncRedis.from_url(redis_url) as redis:
        return [m for key in queue_keys(Queue.DATASETS) for m in redis.lrange(key, 0, -1)]


def test_lost_import_message_is_resent_by_the_reconciler(
    trainer: httpx.Client, stack: Stack, db: sessionmaker[Session]
) -> None:
    from api.reconciler import reconcile_once

    settings = stack_settings(stack, reconcile_grace_seconds=0)
    redis_url = settings.require_redis_url()
    celery = make_celery("test", redis_url)
    worker = [DATASET_WORKER]
    replies = celery.control.cancel_consumer(Queue.DATASETS, destination=worker, reply=True)
    assert replies, "the dataset worker did not answer the remote-control call"
    try:
        response = upload_dataset(trainer, pneumonia_tiny_zip(), "lost-import")
        assert response.status_code == 202, response.text
        url = response.headers["Location"]
        created = trainer.get(url).json()
        with db() as s:
            version_id = s.scalar(
                select(DatasetVersion.id).where(
                    DatasetVersion.dataset_id == uuid.UUID(created["dataset_id"]),
                    DatasetVersion.version == created["version"],
                )
            )
        assert version_id is not None
        deadline = time.monotonic() + 10
        while str(version_id).encode() not in b"".join(_waiting_messages(redis_url)):
            assert time.monotonic() < deadline, "the import message never reached Valkey"
            time.sleep(0.1)
        with SyncRedis.from_url(redis_url) as redis:  # the broker loses it
            redis.delete(*queue_keys(Queue.DATASETS))
    finally:
        celery.control.add_consumer(Queue.DATASETS, destination=worker, reply=True)
    time.sleep(2)
    still = trainer.get(url).json()
    assert still["status"] == "importing"  # nothing will ever import it by itself

    async def one_pass() -> list[uuid.UUID]:
        engine = make_async_engine(settings.require_database_url(), pool_size=2)
        redis = Redis.from_url(redis_url)
        try:
            result = await reconcile_once(
                sessionmaker=make_async_sessionmaker(engine),
                redis=redis,
                celery=celery,
                settings=settings,
            )
            return result.requeued
        finally:
            await redis.aclose()
            await engine.dispose()

    try:
        requeued = asyncio.run(one_pass())
    finally:
        celery.close()
    assert version_id in requeued
    version = wait_for_import(trainer, url)
    assert version["status"] == "ready", version.get("error_detail")
    assert version["stats"]["images"] == 60


def test_import_claim_is_a_lease_and_attempts_are_bounded(
    db: sessionmaker[Session], stack: Stack
) -> None:
    version_id = bare_dataset_version(db)
    with db() as s:
        first = s.scalar(leases.claim_statement(DatasetVersion, version_id, "datasets@a", 120))
        s.commit()
        assert first is not None and first.attempts == 1 and first.lease_expires_at is not None
        # A second delivery while node a imports: refused (no double import).
        assert (
            s.scalar(leases.claim_statement(DatasetVersion, version_id, "datasets@b", 120)) is None
        )
        s.rollback()
        s.execute(
            update(DatasetVersion)
            .where(DatasetVersion.id == version_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=5), attempts=3)
        )
        s.commit()
    # Node a died after 3 claims: the next delivery takes over, counts a 4th and fails it.
    settings = stack_settings(stack, max_attempts=3)
    run_import(
        version_id,
        sessions=db,
        store=BlobStore(settings.store_path),
        settings=settings,
        worker="datasets@b",
    )
    with db() as s:
        version = s.get(DatasetVersion, version_id)
        assert version is not None
        assert version.status == DatasetStatus.FAILED
        assert version.error_type == "attempts-exceeded" and version.lease_expires_at is None
        assert version.finished_at is not None
