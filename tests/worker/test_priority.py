"""Stat over routine with the real worker (one process, prefetch 1): Redis priority lists."""

from __future__ import annotations

from datetime import datetime

import httpx

from tests.api.test_jobs import _files, _labelled_pngs, _submit
from tests.conftest import wait_for_job


def test_stat_job_overtakes_routine_jobs_already_queued(api: httpx.Client) -> None:
    paths = [p for p, _ in _labelled_pngs()]  # 8 images: a full batch, no micro-batching
    routine = [_submit(api, _files(*paths * 2)).json()["id"] for _ in range(10)]
    stat = _submit(api, _files(paths[0]), priority="stat").json()["id"]
    done = {j: wait_for_job(api, j) for j in [*routine, stat]}
    assert all(j["status"] == "succeeded" for j in done.values())
    started = {j: datetime.fromisoformat(d["started_at"]) for j, d in done.items()}
    before_stat = [j for j in routine if started[j] < started[stat]]
    # At most the job running when the stat job arrived (and one the worker had already
    # fetched) go first; the other routine jobs wait behind it.
    assert len(before_stat) <= 2, (len(before_stat), started)
    assert started[stat] < max(started[j] for j in routine)
