"""Stat over routine with the real worker (one process, prefetch 1): Redis priority lists."""

from __future__ import annotations

from datetime import datetime

import httpx

from tests.conftest import wait_for_job
from tests.factories import image_files, labelled_pngs, submit_job


def test_stat_job_overtakes_routine_jobs_already_queued(api: httpx.Client) -> None:
    paths = [p for p, _ in labelled_pngs()]  # 8 images: a full batch, no micro-batching
    routine = [submit_job(api, image_files(*paths * 2)).json()["id"] for _ in range(10)]
    stat = submit_job(api, image_files(paths[0]), priority="stat").json()["id"]
    done = {j: wait_for_job(api, j) for j in [*routine, stat]}
    assert all(j["status"] == "succeeded" for j in done.values())
    started = {j: datetime.fromisoformat(d["started_at"]) for j, d in done.items()}
    arrived = datetime.fromisoformat(done[stat]["created_at"])
    # Routine jobs the worker started after the stat job arrived but before it: at most the
    # one it had already fetched (prefetch 1). Those started earlier ran while the stat job
    # was still being submitted (a fast machine gets through several).
    overtaken = [j for j in routine if arrived <= started[j] < started[stat]]
    assert len(overtaken) <= 1, (len(overtaken), arrived, started)
    assert started[stat] < max(started[j] for j in routine)
