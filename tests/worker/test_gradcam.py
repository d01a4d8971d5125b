"""Grad-CAM through the real stack: a PNG artifact at the upload's size, linked from the result."""

from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image

from tests.conftest import wait_for_job
from tests.factories import labelled_pngs, submit_job


def test_gradcam_overlay_is_a_png_of_the_original_size_heat_only_where_the_model_looked(
    api: httpx.Client,
) -> None:
    # A real X-ray flanked by flat gray: center_crop shows the network only the X-ray, so
    # the flanks must carry no heat (the overlay leaves them as they were).
    xray = np.asarray(Image.open(labelled_pngs()[4][0]).convert("L"))
    h, w = xray.shape
    wide = np.full((h, 3 * w), 128, dtype=np.uint8)
    wide[:, w : 2 * w] = xray
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    files = [("files", ("wide.png", buffer.getvalue(), "image/png"))]

    job = wait_for_job(api, submit_job(api, files, explain="gradcam").json()["id"])
    assert job["status"] == "succeeded", job
    output = job["images"][0]["output"]
    url = output["artifacts"]["gradcam"]
    assert url == f"/v1/jobs/{job['id']}/artifacts/gradcam-0.png"
    listed = api.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]
    assert [a["name"] for a in listed] == ["gradcam-0.png"]

    response = api.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(response.content))
    assert png.format == "PNG" and png.size == (3 * w, h) and png.mode == "RGB"
    rgb = np.asarray(png).astype(int)
    flanks = np.concatenate([rgb[:, :w], rgb[:, 2 * w :]], axis=1)
    assert (flanks == 128).all()  # no heat outside what the network saw
    centre = rgb[:, w : 2 * w]
    gray = np.repeat(xray[..., None].astype(int), 3, axis=-1)
    change = np.abs(centre - gray).max(axis=-1)
    assert change.max() > 40 and change.min() < change.max() / 2  # a heatmap, not uniform


def test_without_explain_no_artifacts(api: httpx.Client) -> None:
    path = labelled_pngs()[0][0]
    files = [("files", (path.name, path.read_bytes(), "image/png"))]
    job = wait_for_job(api, submit_job(api, files).json()["id"])
    assert "artifacts" not in job["images"][0]["output"]
    assert api.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"] == []
