"""POST /v1/models/{name}/versions/{v}/guard runs the accuracy guard on a real worker."""

from __future__ import annotations

import time

import httpx

from shared import runtime_plans as rp


def test_guard_job_stores_plans_on_the_version_view(api: httpx.Client) -> None:
    url = "/v1/models/pneumonia-resnet18/versions/1"
    response = api.post(f"{url}/guard")
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 150
    plans = None
    while time.monotonic() < deadline and not plans:
        plans = api.get(url).raise_for_status().json()["runtime_plans"]
        time.sleep(0.5)
    assert plans, "the guard job stored nothing"
    ((hardware, entry),) = plans.items()
    stored = rp.HardwarePlans.model_validate(entry)
    assert stored.hardware == hardware and stored.calibration.startswith("calibration/")
    assert stored.reports and all(r.images == 524 for r in stored.reports if r.images)
    assert stored.chosen == rp.plan_for(plans, hardware)  # what workers will run
    # The chosen plan passed (or is the fp32 reference); results still arrive with it.
    assert stored.chosen == rp.FP32 or any(
        r.passed and r.plan == stored.chosen for r in stored.reports
    )
