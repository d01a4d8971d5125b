"""Chaos with real processes: kill workers, restart Valkey, stop PostgreSQL under load.

Each test prints `submitted= completed= lost= duplicated=` counted from Postgres; lost and
duplicated must be 0. The tests share one platform of their own (not the session stack)
and leave it running with one `cpu` worker for the next test.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import func, select

from shared.db.models import Job, JobImage
from shared.queueing import queue_keys
from tests.chaos.harness import Chaos, noise_png

PROBLEM_JSON = "application/problem+json"


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    root: Path = tmp_path_factory.mktemp("chaos")
    platform = Chaos(root)
    try:
        yield platform
    except BaseException:
        platform.dump_logs()
        raise
    finally:
        platform.close()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [noise_png(seed) for seed in range(8)]


def _report(name: str, chaos: Chaos, ids: list[uuid.UUID], sizes: dict[uuid.UUID, int]) -> None:
    tally = chaos.tally(ids, sizes)
    print(f"{name}: {tally.line()}")
    if tally.lost or tally.duplicated:
        chaos.dump_logs()
    assert tally.lost == 0 and tally.duplicated == 0, tally.line()


# The tests run in file order on one platform, each leaving the worker nodes the next uses:
# cpu (stack) -> SIGTERM -> b + c -> SIGKILL b -> c -> Valkey restart -> d -> time limit -> t.


def test_sigterm_lets_the_worker_finish_its_job(chaos: Chaos, images: list[bytes]) -> None:
    big = images * 4  # 32 images: seconds of work, so the signal lands mid-job
    job_id = chaos.submit_ok(big)
    chaos.wait_running(job_id, "cpu")
    code = chaos.stop_worker("cpu", signal.SIGTERM)  # warm shutdown: finish, then exit
    with chaos.db() as s:
        job = s.get(Job, job_id)
        assert job is not None
        print(f"worker exited with {code}; job {job.status} on {job.worker}, "
              f"attempts={job.attempts}")  # fmt: skip
    _report("sigterm", chaos, [job_id], {job_id: len(big)})
    assert job.status == "succeeded" and job.attempts == 1  # finished by the stopping worker


def test_sigkill_of_a_worker_mid_job_loses_nothing(chaos: Chaos, images: list[bytes]) -> None:
    chaos.start_workers("cpu-b", "cpu-c")
    batch = images * 2
    ids = [chaos.submit_ok(batch) for _ in range(5)]
    victim = chaos.wait_running_any(ids)
    chaos.stop_worker(victim, signal.SIGKILL)  # node dies holding an unacknowledged message
    survivor = ({"cpu-b", "cpu-c"} - {victim}).pop()
    _report("sigkill", chaos, ids, dict.fromkeys(ids, len(batch)))
    with chaos.db() as s:
        rows = s.execute(select(Job.worker, Job.attempts).where(Job.id.in_(ids))).all()
    print(f"killed {victim}; finished on:", Counter(w.split("@")[0] for w, _ in rows),
          "attempts:", Counter(a for _, a in rows))  # fmt: skip
    retried = [w for w, a in rows if a > 1]
    assert retried and all(w.startswith(f"{survivor}@") for w in retried)


def test_valkey_restart_without_persistence_loses_no_queued_job(
    chaos: Chaos, images: list[bytes]
) -> None:
    for node in [n for n in ("cpu-b", "cpu-c") if f"worker-{n}" in chaos.stack.processes]:
        chaos.stop_worker(node)  # nothing consumes: every job waits in Valkey
    try:
        ids = [chaos.submit_ok(images[:2]) for _ in range(10)]
        chaos.restart_valkey()
        client = redis.Redis(port=chaos.redis_port)
        assert sum(client.llen(k) for k in queue_keys("cpu")) == 0  # the messages are gone
        client.close()
    finally:
        chaos.start_workers("cpu-d")
    # The API reconnects to the new server, and the reconciler re-sends the lost jobs.
    ids += [chaos.submit_ok(images[:2]) for _ in range(2)]
    _report("valkey-restart", chaos, ids, dict.fromkeys(ids, 2))
    metrics = httpx.get(chaos.stack.api_url + "/metrics", timeout=10).text
    resent = re.search(
        r'^medimg_reconciler_requeued_total\{kind="inference",reason="lost"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    assert resent and float(resent.group(1)) >= 10, "the reconciler re-sent the lost jobs"


def test_postgres_outage_answers_503_and_loses_nothing_accepted(
    chaos: Chaos, images: list[bytes]
) -> None:
    accepted: list[uuid.UUID] = []
    statuses: Counter[str] = Counter()
    bad: list[str] = []
    stop = threading.Event()

    def load() -> None:
        headers = chaos.client.headers
        with httpx.Client(base_url=chaos.stack.api_url, timeout=30, headers=headers) as c:
            while not stop.is_set():
                files = [("files", ("a.png", images[0], "image/png"))]
                for method, response in (
                    ("POST", c.post("/v1/jobs", data={"model": "pneumonia-resnet18"}, files=files)),
                    ("GET", c.get("/v1/jobs", params={"limit": 5})),
                ):
                    statuses[f"{method} {response.status_code}"] += 1
                    if response.status_code == 202:
                        accepted.append(uuid.UUID(response.json()["id"]))
                    elif response.status_code not in (200, 503) or (
                        response.status_code == 503
                        and response.headers.get("content-type") != PROBLEM_JSON
                    ):
                        bad.append(f"{method} {response.status_code} {response.text[:200]}")
                time.sleep(0.05)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    time.sleep(2)
    with chaos.postgres_down():
        time.sleep(1)
        ready = httpx.get(chaos.stack.api_url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
        time.sleep(9)
    time.sleep(4)  # load continues after the restart
    stop.set()
    thread.join(timeout=60)

    print("responses:", dict(statuses))
    assert not bad, bad
    assert statuses["POST 503"] > 0 and statuses["POST 202"] > 0
    assert httpx.get(chaos.stack.api_url + "/readyz", timeout=10).status_code == 200
    chaos.stack.check_alive()  # the API and workers survived the outage
    _report("postgres-outage", chaos, accepted, dict.fromkeys(accepted, 1))


def test_soft_time_limit_fails_the_job_instead_of_leaving_it_running(
    chaos: Chaos, images: list[bytes]
) -> None:
    # Only the limited node may consume the queue, whatever earlier tests left running.
    for name in [n for n in chaos.stack.processes if n.startswith("worker-")]:
        chaos.stop_worker(name.removeprefix("worker-"))
    limits = {"MEDIMG_INFER_SOFT_TIME_LIMIT": "0.5", "MEDIMG_INFER_HARD_TIME_LIMIT": "20"}
    chaos.start_workers("cpu-t", **limits)
    # The detector takes ~0.1-0.3 s per image here, so 64 images outlast the limit on any
    # machine (the 28 px classifier could finish before the pool's timer looked).
    job_id = chaos.submit_ok(images * 8, model="bccd-frcnn-efficientnet-lite0-fpn")
    status = chaos.wait_final([job_id], timeout=120)[job_id]
    with chaos.db() as s:
        job = s.get(Job, job_id)
        assert job is not None
        done = s.scalar(
            select(func.count()).where(JobImage.job_id == job_id, JobImage.status != "pending")
        )
    print(f"time-limit: job {status} on {job.worker} ({job.error_type}: {job.error_detail}); "
          f"{done} done")  # fmt: skip
    assert status == "failed" and job.error_type == "time-limit"
    assert "time limit" in (job.error_detail or "")
