"""`medimg run` (what `make run` starts): serves, stops cleanly on Ctrl-C, keeps data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from cli.stack import free_port
from tests.conftest import wait_for_job
from tests.factories import MODEL, image_files, labelled_pngs


def _start(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "run", "--data-dir", str(data_dir), "--port", str(port),
         "--concurrency", "1"],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-4000:]
        if "medimg is running" in log.read_text():
            return
        time.sleep(0.5)
    pytest.fail(f"medimg run did not become ready:\n{log.read_text()[-4000:]}")


def _printed_admin_key(log: Path) -> str:
    lines = log.read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if "admin API key" in line)
    return next(line.strip() for line in lines[marker:] if line.strip().startswith("mk_"))


def _interrupt(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert proc.wait(timeout=60) == 0
    return children


def test_run_serves_stops_everything_on_ctrl_c_and_keeps_jobs(tmp_path: Path) -> None:
    data, log, port = tmp_path / "var", tmp_path / "run1.log", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(data, port, log)
    try:
        _wait_ready(proc, url, log)
        assert httpx.get(f"{url}/docs").status_code == 200
        key = _printed_admin_key(log)
        files = image_files(labelled_pngs()[0][0])
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
            job_id = client.post("/v1/jobs", data={"model": MODEL}, files=files).json()["id"]
            first = wait_for_job(client, job_id)
        assert first["status"] == "succeeded"
        children = _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert children, "medimg run started no processes"
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.pid for p in alive]
    assert not (data / "postgres" / "postmaster.pid").exists()

    # Second run on the same folder: the first run's job is still there.
    log = tmp_path / "run2.log"
    proc = _start(data, port, log)
    try:
        _wait_ready(proc, url, log)
        assert "admin API key" not in log.read_text()  # printed once, on the first run only
        headers = {"Authorization": f"Bearer {key}"}
        again = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()
        assert again["status"] == "succeeded"
        assert again["images"] == first["images"]
        _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
