"""Model registry through the real stack: uploads, versions, aliases, ensembles, lifecycle.

Packages are built from the bundled models/pneumonia-resnet18 (card.json + weights.pt),
with cards and checkpoints changed in temporary folders.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from cli.stack import Stack
from shared.config import REPO_ROOT
from tests.conftest import client_for, wait_for_job
from tests.factories import assert_problem, image_files, labelled_pngs

BUNDLED = REPO_ROOT / "models" / "pneumonia-resnet18"
BUNDLED_CARD: dict[str, Any] = json.loads((BUNDLED / "card.json").read_text())


def _name() -> str:
    return f"reg-{uuid.uuid4().hex[:8]}"


def _card(name: str, **changes: Any) -> str:
    return json.dumps({**BUNDLED_CARD, "name": name, **changes})


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints: the bundled one, a perturbed copy, a 3-output head, bad ones."""
    root = tmp_path_factory.mktemp("weights")
    state = torch.load(BUNDLED / "weights.pt", weights_only=True)
    other = {k: v.clone() for k, v in state.items()}
    other["fc.bias"] += 0.01
    three = {**state, "fc.weight": torch.zeros(3, 512).half(), "fc.bias": torch.zeros(3).half()}
    paths = {"bundled": BUNDLED / "weights.pt"}
    for key, value in {"other": other, "three": three}.items():
        paths[key] = root / f"{key}.pt"
        torch.save(value, paths[key])
    paths["text"] = root / "text.pt"
    paths["text"].write_text("definitely not a checkpoint")
    paths["evil"] = root / "evil.pt"
    torch.save({**state, "x": _Payload()}, paths["evil"])
    return paths


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/medimg-registry-pwned",))


def _upload(api: httpx.Client, card: str, weights: Path | None, **form: str) -> httpx.Response:
    files = {"weights": ("weights.pt", weights.read_bytes())} if weights else None
    return api.post("/v1/models", data={"card": card, **form}, files=files)


def _zip_package(card: str, weights: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pkg/card.json", card)
        zf.write(weights, "pkg/weights.pt")
    return buf.getvalue()


def _tar_package(card: str, weights: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = card.encode()
        info = tarfile.TarInfo("card.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        tf.add(weights, "weights.pt")
    return buf.getvalue()


def _job(api: httpx.Client, model: str) -> dict[str, Any]:
    image = labelled_pngs()[0][0]
    response = api.post("/v1/jobs", data={"model": model}, files=image_files(image))
    assert response.status_code == 202, response.text
    return response.json()


@pytest.fixture(scope="module")
def two_versions(api: httpx.Client, weights: dict[str, Path]) -> str:
    name = _name()
    assert _upload(api, _card(name), weights["bundled"]).status_code == 201
    assert _upload(api, _card(name), weights["other"]).status_code == 201
    return name


def test_bundled_model_is_production(api: httpx.Client) -> None:
    model = api.get("/v1/models/pneumonia-resnet18").json()
    assert model["aliases"] == {"production": 1}
    assert model["latest"]["aliases"] == ["production"]


def test_versions_are_immutable_and_reuploads_are_idempotent(
    api: httpx.Client, weights: dict[str, Path]
) -> None:
    name = _name()
    digest = hashlib.sha256(weights["bundled"].read_bytes()).hexdigest()
    first = _upload(api, _card(name), weights["bundled"], sha256=digest)
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["ref"] == f"{name}:1" and created["weights_sha256"] == digest
    assert first.headers["location"] == f"/v1/models/{name}/versions/1"

    again = api.post(
        "/v1/models", files={"package": ("m.zip", _zip_package(_card(name), weights["bundled"]))}
    )
    assert again.status_code == 200 and again.json()["version"] == 1

    second = api.post(
        "/v1/models", files={"package": ("m.tgz", _tar_package(_card(name), weights["other"]))}
    )
    assert second.status_code == 201, second.text
    assert second.json()["version"] == 2 and second.json()["weights_sha256"] != digest
    model = api.get(f"/v1/models/{name}").json()
    assert model["versions"] == [1, 2] and model["latest"]["version"] == 2
    assert api.get(f"/v1/models/{name}/versions/1").json()["weights_sha256"] == digest


def test_aliases_route_new_jobs_and_results_record_the_exact_version(
    api: httpx.Client, two_versions: str
) -> None:
    name = two_versions
    assert _job(api, name)["model"]["ref"] == f"{name}:2"  # no production: newest
    put = api.put(f"/v1/models/{name}/aliases/production", json={"version": 1})
    assert put.status_code == 200 and put.json()["ref"] == f"{name}:1"
    before = _job(api, f"{name}@production")
    assert before["model"]["ref"] == f"{name}:1"
    assert _job(api, name)["model"]["ref"] == f"{name}:1"  # plain name follows production

    api.put(f"/v1/models/{name}/aliases/production", json={"version": 2}).raise_for_status()
    assert _job(api, f"{name}@production")["model"]["ref"] == f"{name}:2"
    assert api.get(f"/v1/jobs/{before['id']}").json()["model"]["ref"] == f"{name}:1"
    assert _job(api, f"{name}:1")["model"]["ref"] == f"{name}:1"

    api.put(f"/v1/models/{name}/aliases/staging", json={"version": 1}).raise_for_status()
    assert api.get(f"/v1/models/{name}").json()["aliases"] == {"production": 2, "staging": 1}
    assert api.delete(f"/v1/models/{name}/aliases/staging").status_code == 204
    missing = api.post(
        "/v1/jobs", data={"model": f"{name}@staging"}, files=image_files(labelled_pngs()[0][0])
    )
    assert_problem(missing, 404, "model-not-found")
    bad = api.put(f"/v1/models/{name}/aliases/Bad Alias!", json={"version": 1})
    assert_problem(bad, 422, "invalid-request")
    assert_problem(
        api.put(f"/v1/models/{name}/aliases/qa", json={"version": 9}), 404, "model-not-found"
    )


def _evil_marker() -> Path:
    return Path("/tmp/medimg-registry-pwned")


Case = Callable[[dict[str, Path]], tuple[str, Path | None, dict[str, str]]]
CASES: dict[str, tuple[Case, int, str, str]] = {
    "bad card": (
        lambda w: (_card(_name(), labels=["only-one"], input={"size": 2}), w["bundled"], {}),
        422,
        "invalid-model-card",
        "card.input",
    ),
    "card not json": (lambda w: ("{nope", w["bundled"], {}), 422, "invalid-model-card", "JSON"),
    "unknown architecture": (
        lambda w: (_card(_name(), architecture="vgg99"), w["bundled"], {}),
        422,
        "invalid-model-package",
        "vgg99",
    ),
    "head vs labels": (
        lambda w: (_card(_name(), labels=["a", "b", "c"], positive_label="c"), w["bundled"], {}),
        422,
        "invalid-model-package",
        "2 outputs",
    ),
    "checksum mismatch": (
        lambda w: (_card(_name()), w["bundled"], {"sha256": "0" * 64}),
        422,
        "checksum-mismatch",
        "SHA-256",
    ),
    "not a checkpoint": (
        lambda w: (_card(_name()), w["text"], {}),
        422,
        "invalid-model-package",
        "not a PyTorch",
    ),
    "forbidden global": (
        lambda w: (_card(_name()), w["evil"], {}),
        422,
        "unsafe-checkpoint",
        "system",
    ),
    "no weights": (lambda w: (_card(_name()), None, {}), 422, "invalid-model-package", "weights"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_upload_validation_failures(api: httpx.Client, weights: dict[str, Path], case: str) -> None:
    build, status, type_suffix, needle = CASES[case]
    card, path, form = build(weights)
    body = assert_problem(_upload(api, card, path, **form), status, type_suffix)
    assert needle in body["detail"], body
    assert not _evil_marker().exists()
    if case == "bad card":
        assert {e["field"] for e in body["errors"]} >= {"card.labels", "card.input.size"}


def test_package_format_and_permissions(
    api: httpx.Client, stack: Stack, make_key: Callable[..., str]
) -> None:
    not_archive = api.post("/v1/models", files={"package": ("m.txt", b"hello world")})
    assert_problem(not_archive, 415, "unsupported-model-package")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("README.md", "no card here")
    assert_problem(
        api.post("/v1/models", files={"package": ("m.zip", buf.getvalue())}),
        422,
        "invalid-model-package",
    )
    with client_for(stack, make_key(scopes=("jobs:write",))) as jobs_only:
        assert_problem(jobs_only.post("/v1/models", data={"card": "{}"}), 403, "forbidden")
    with client_for(stack, make_key(scopes=("models:admin",))) as tenant_admin:
        response = tenant_admin.put("/v1/models/pneumonia-resnet18/aliases/x", json={"version": 1})
        assert_problem(response, 403, "forbidden")


def _ensemble(name: str, members: list[str], **extra: Any) -> str:
    return json.dumps({"name": name, "kind": "ensemble", "ensemble": {"members": members, **extra}})


def test_ensemble_registration_pins_members_and_validates_them(
    api: httpx.Client, weights: dict[str, Path], two_versions: str
) -> None:
    name = _name()
    members = ["pneumonia-resnet18@production", f"{two_versions}:2"]
    created = _upload(api, _ensemble(name, members, vote="hard", weights=[2, 1]), None)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["kind"] == "ensemble" and body["labels"] == ["normal", "pneumonia"]
    assert [m["ref"] for m in body["members"]] == ["pneumonia-resnet18:1", f"{two_versions}:2"]
    assert [m["weight"] for m in body["members"]] == [2, 1]
    assert body["card"]["ensemble"]["vote"] == "hard"
    again = _upload(
        api,
        _ensemble(name, ["pneumonia-resnet18:1", f"{two_versions}:2"], vote="hard", weights=[2, 1]),
        None,
    )
    assert again.status_code == 200 and again.json()["version"] == 1

    three = _name()
    card3 = _card(three, labels=["a", "b", "c"], positive_label=None, operating_point=None)
    assert _upload(api, card3, weights["three"]).status_code == 201
    bad = {
        "labels differ": _ensemble(_name(), [f"{two_versions}:1", f"{three}:1"]),
        "unknown member": _ensemble(_name(), [f"{two_versions}:1", "no-such-model"]),
        "nested": _ensemble(_name(), [f"{two_versions}:1", f"{name}:1"]),
        "duplicate": _ensemble(_name(), [f"{two_versions}:1", f"{two_versions}:1"]),
        "one member": _ensemble(_name(), [f"{two_versions}:1"]),
        "weights count": _ensemble(
            _name(), [f"{two_versions}:1", f"{two_versions}:2"], weights=[1]
        ),
    }
    for case, card in bad.items():
        response = _upload(api, card, None)
        assert response.status_code == 422, (case, response.text)
        assert response.json()["type"].endswith("invalid-model-card"), case
    with_weights = _upload(api, _ensemble(_name(), members), weights["bundled"])
    assert_problem(with_weights, 422, "invalid-model-package")


def test_deprecate_and_delete_keep_old_results_readable(
    api: httpx.Client, weights: dict[str, Path]
) -> None:
    name = _name()
    assert _upload(api, _card(name), weights["bundled"]).status_code == 201
    old = wait_for_job(api, _job(api, f"{name}:1")["id"])
    assert old["status"] == "succeeded" and old["model"]["deprecated"] is None

    response = api.post(f"/v1/models/{name}/versions/1/deprecate", json={"reason": "superseded"})
    assert response.status_code == 200 and response.json()["deprecation_reason"] == "superseded"
    assert "superseded" in api.get(f"/v1/jobs/{old['id']}").json()["model"]["deprecated"]
    assert _job(api, f"{name}:1")["model"]["ref"] == f"{name}:1"  # deprecated still runs

    member = _name()
    assert (
        _upload(api, _ensemble(member, [f"{name}:1", "pneumonia-resnet18:1"]), None).status_code
        == 201
    )
    api.put(f"/v1/models/{name}/aliases/production", json={"version": 1}).raise_for_status()
    assert_problem(api.delete(f"/v1/models/{name}/versions/1"), 409, "conflict")  # alias
    api.delete(f"/v1/models/{name}/aliases/production").raise_for_status()
    assert_problem(api.delete(f"/v1/models/{name}/versions/1"), 409, "conflict")  # ensemble
    assert_problem(api.delete(f"/v1/models/{name}"), 409, "conflict")
    assert api.delete(f"/v1/models/{member}").status_code == 204
    assert api.delete(f"/v1/models/{name}/versions/1").status_code == 204

    refused = api.post(
        "/v1/jobs", data={"model": f"{name}:1"}, files=image_files(labelled_pngs()[0][0])
    )
    assert_problem(refused, 404, "model-not-found")
    after = api.get(f"/v1/jobs/{old['id']}").json()
    assert after["model"]["ref"] == f"{name}:1" and "deleted" in after["model"]["deprecated"]
    assert (
        after["images"][0]["output"]["probabilities"] == old["images"][0]["output"]["probabilities"]
    )
    version = api.get(f"/v1/models/{name}/versions/1").json()
    assert version["deleted_at"] and version["card"]["data"]["licence"]

    assert api.delete(f"/v1/models/{name}").status_code == 204
    assert name not in {m["name"] for m in api.get("/v1/models").json()["items"]}
    listed = api.get("/v1/models", params={"include_deleted": "true"}).json()["items"]
    assert any(m["name"] == name and m["deleted_at"] for m in listed)
    assert api.get(f"/v1/jobs/{old['id']}").status_code == 200
