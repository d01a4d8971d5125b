"""Job-finished events for long-polling (GET /v1/jobs/{id}?wait=): PostgreSQL LISTEN/NOTIFY.

A trigger on the job table (migration 3f9a61c2d7b4) notifies `medimg_job_final` whenever a
job reaches succeeded/failed/cancelled, whoever wrote it. Each API process holds one
listening connection, started on the first wait, and wakes the requests waiting on that id.
A lost connection is reopened; waiters re-read the row anyway, so nothing is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import psycopg

log = logging.getLogger(__name__)
CHANNEL = "medimg_job_final"


def _dsn(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


class JobEvents:
    def __init__(self, database_url: str) -> None:
        self._dsn = _dsn(database_url)
        self._waiters: defaultdict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._ready.set()
                    async for note in conn.notifies():
                        with contextlib.suppress(ValueError):
                            for event in self._waiters.get(uuid.UUID(note.payload), ()):
                                event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database restart: listen again shortly
                log.warning("job event listener lost its connection: %s", exc)
                self._ready.clear()
                await asyncio.sleep(0.5)

    async def _started(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="job-events")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 2)

    @contextlib.asynccontextmanager
    async def subscription(self, job_id: uuid.UUID) -> AsyncIterator[asyncio.Event]:
        """An event set when ``job_id`` finishes. Subscribe *before* reading the row so a
        finish between the read and the wait is not missed."""
        await self._started()
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            self._waiters[job_id].discard(event)
            if not self._waiters[job_id]:
                del self._waiters[job_id]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
