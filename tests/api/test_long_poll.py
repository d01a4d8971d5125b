"""GET /v1/jobs/{id}?wait= returns as soon as the job is final (LISTEN/NOTIFY), not at timeout."""

from __future__ import annotations

import time

import httpx

from tests.factories import image_files, labelled_pngs


def test_wait_returns_when_the_job_finishes_with_its_final_status(api: httpx.Client) -> None:
    image = labelled_pngs()[0][0]
    created = api.post("/v1/jobs", data={"model": "pneumonia-resnet18"}, files=image_files(image))
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    start = time.monotonic()
    job = api.get(f"/v1/jobs/{job_id}", params={"wait": 30}, timeout=40).json()
    elapsed = time.monotonic() - start
    assert job["status"] == "succeeded", job
    assert job["images"][0]["output"]["label"] in ("normal", "pneumonia")
    assert elapsed < 25, f"the wait ran {elapsed:.1f} s: it did not wake on the finish"
    # Already final: answers at once.
    start = time.monotonic()
    assert api.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()["status"] == "succeeded"
    assert time.monotonic() - start < 5


def test_wait_out_of_range_is_a_422_problem(api: httpx.Client) -> None:
    for bad in ("-1", "61", "soon"):
        response = api.get(f"/v1/jobs/{'0' * 8}-0000-0000-0000-{'0' * 12}", params={"wait": bad})
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
