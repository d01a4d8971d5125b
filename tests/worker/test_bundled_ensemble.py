"""The shipped `pneumonia-ensemble`: registered on start-up, members pinned, vote served."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from shared.errors import InvalidRequest
from shared.registry import register_bundled
from shared.storage import BlobStore
from tests.api.test_jobs import _files, _labelled_pngs, _submit
from tests.conftest import wait_for_job

MODELS = Path(__file__).resolve().parents[2] / "models"
ENSEMBLE = "pneumonia-ensemble"


def _card() -> dict:
    return json.loads((MODELS / ENSEMBLE / "card.json").read_text())


def test_bundled_ensemble_is_registered_with_members_pinned(api: httpx.Client) -> None:
    card = _card()
    body = api.get(f"/v1/models/{ENSEMBLE}").raise_for_status().json()
    latest = body["latest"]
    assert latest["kind"] == "ensemble" and body["aliases"].get("production") == 1
    assert latest["card"]["ensemble"]["vote"] == "soft"
    names = card["ensemble"]["members"]
    assert len(names) >= 3
    pinned = latest["members"]
    assert [m["ref"].split(":")[0] for m in pinned] == names
    for member, measured in zip(pinned, card["metrics"]["members"], strict=True):
        name, version = member["ref"].split(":")
        registered = api.get(f"/v1/models/{name}/versions/{version}").raise_for_status().json()
        # Pinned to the version holding exactly the weights the card was measured on.
        assert registered["weights_sha256"] == measured["weights_sha256"]
        assert registered["kind"] == "single"
    # The card's claim: at least as good as its best member on the same test split.
    best = max(m["test_auroc"] for m in card["metrics"]["members"])
    assert card["metrics"]["test"]["auroc"] >= best


def test_job_on_the_ensemble_returns_every_member_and_the_vote(api: httpx.Client) -> None:
    labelled = _labelled_pngs()
    response = _submit(api, _files(*(p for p, _ in labelled)), model=ENSEMBLE)
    assert response.status_code == 202, response.text
    job = wait_for_job(api, response.json()["id"])
    assert job["status"] == "succeeded", job
    weights = _card()["ensemble"]["weights"]
    pinned = api.get(f"/v1/models/{ENSEMBLE}").raise_for_status().json()["latest"]["members"]
    for image in job["images"]:
        out = image["output"]
        members = out["ensemble"]["members"]
        assert out["ensemble"]["vote"] == "soft"
        assert [m["ref"] for m in members] == [m["ref"] for m in pinned]
        assert all(m["label"] in ("normal", "pneumonia") for m in members)
        for label in ("normal", "pneumonia"):
            mean = sum(
                w * m["probabilities"][label] for w, m in zip(weights, members, strict=True)
            ) / sum(weights)
            assert out["probabilities"][label] == pytest.approx(mean, abs=2e-6)
        threshold = out["operating_point"]["threshold"]
        assert threshold == pytest.approx(_card()["operating_point"]["threshold"])
        expected = "pneumonia" if out["probabilities"]["pneumonia"] >= threshold else "normal"
        assert out["label"] == expected


def _tampered_root(tmp: Path, change: dict) -> Path:
    """models/ with symlinked members and an ensemble card changed by ``change``."""
    root = tmp / f"models-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    for folder in MODELS.iterdir():
        if folder.name != ENSEMBLE:
            (root / folder.name).symlink_to(folder)
    card = _card()
    card.update(change(card) if callable(change) else change)
    (root / ENSEMBLE).mkdir()
    (root / ENSEMBLE / "card.json").write_text(json.dumps(card))
    return root


def _stale(card: dict) -> dict:
    members = [dict(m) for m in card["metrics"]["members"]]
    members[0]["weights_sha256"] = "0" * 64
    return {"metrics": {**card["metrics"], "members": members}}


def _foreign(card: dict) -> dict:
    return {"ensemble": {**card["ensemble"], "members": [*card["ensemble"]["members"][:-1],
                                                        "no-such-package"]}}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [(_stale, "measured on other weights"), (_foreign, "is not a package")],
)
def test_bundled_ensemble_refuses_stale_or_foreign_members(
    db: sessionmaker[Session],
    tmp_path: Path,
    change: object,
    message: str,
) -> None:
    root = _tampered_root(tmp_path, change)
    store = BlobStore(tmp_path / "blobs")  # members already registered: nothing is copied
    with db() as session, pytest.raises(InvalidRequest, match=message):
        register_bundled(session, store, root)
    shutil.rmtree(root)
