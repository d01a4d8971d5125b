"""Metrics, request ids and logs: what an operator scrapes and greps."""

from __future__ import annotations

import json

import httpx

from cli.stack import Stack
from tests.conftest import wait_for_job
from tests.factories import MODEL, image_files, labelled_pngs, submit_job


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_api_metrics_report_jobs_queues_and_http(api: httpx.Client) -> None:
    path, _ = labelled_pngs()[0]
    wait_for_job(api, submit_job(api, image_files(path)).json()["id"])
    text = api.get("/metrics").text
    jobs = _samples(text, "medimg_jobs")
    assert jobs[f'medimg_jobs{{model="{MODEL}",status="succeeded"}}'] >= 1
    depth = _samples(text, "medimg_queue_depth")
    queues = ("cpu", "gpu", "train", "datasets")
    assert set(depth) == {f'medimg_queue_depth{{queue="{q}"}}' for q in queues}
    http = _samples(text, "medimg_http_requests_total")
    assert http['medimg_http_requests_total{method="POST",route="/v1/jobs",status="202"}'] >= 1
    # Route templates, never raw ids, as labels.
    assert any('route="/v1/jobs/{job_id}"' in k for k in http)


def test_worker_metrics_count_images_and_latency(api: httpx.Client, stack: Stack) -> None:
    paths = [p for p, _ in labelled_pngs()[:3]]
    port = stack.config.worker_metrics_port
    before = _samples(
        httpx.get(f"http://127.0.0.1:{port}/metrics").text, "medimg_images_processed_total"
    )
    key = f'medimg_images_processed_total{{model="{MODEL}",status="succeeded"}}'
    wait_for_job(api, submit_job(api, image_files(*paths)).json()["id"])
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    after = _samples(text, "medimg_images_processed_total")
    assert after[key] - before.get(key, 0) == 3
    assert (
        _samples(text, "medimg_model_latency_seconds_count")[
            f'medimg_model_latency_seconds_count{{model="{MODEL}"}}'
        ]
        >= 3
    )
    assert _samples(text, "medimg_job_end_to_end_seconds_count")


def test_request_id_is_echoed_and_logs_are_json_without_file_names(
    api: httpx.Client, stack: Stack
) -> None:
    path, _ = labelled_pngs()[0]
    secret_name = "DOE_JANE_19700101.png"  # file names can carry patient identifiers
    files = [("files", (secret_name, path.read_bytes(), "image/png"))]
    response = api.post(
        "/v1/jobs", data={"model": MODEL}, files=files, headers={"X-Request-ID": "req-42"}
    )
    # The server makes its own request id; the client's is kept beside it, never trusted as ours.
    assert response.headers["x-request-id"] != "req-42"
    assert response.headers["x-client-request-id"] == "req-42"
    job_id = response.json()["id"]
    wait_for_job(api, job_id)
    assert api.get("/healthz").headers["x-request-id"]  # generated when absent
    assert stack.config.log_dir is not None
    worker_log = (stack.config.log_dir / "worker-cpu.log").read_text()
    records = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    assert records, "worker logs are not JSON lines"
    assert any(r.get("job_id") == job_id for r in records)
    for log in stack.config.log_dir.glob("*.log"):
        assert secret_name not in log.read_text()
        assert "DOE_JANE" not in log.read_text()
