"""Datasets API end to end: real API, Postgres, Valkey and the cpu worker doing the import."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from tests.conftest import KeyFactory, client_for
from tests.fixtures.datasets import (
    pneumonia_tiny_zip,
)

ZIP = "application/zip"


@pytest.fixture(scope="module")
def trainer(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    return client_for(stack, make_key(tenant="datasets-a", scopes=("train",)))


def upload(client: httpx.Client, data: bytes, name: str, **form: Any) -> httpx.Response:
    fields = {"name": name, **{k: str(v) for k, v in form.items()}}
    return client.post("/v1/datasets", data=fields, files={"file": ("data.zip", data, ZIP)})


def wait_for_import(client: httpx.Client, url: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version: dict[str, Any] = client.get(url).raise_for_status().json()
        if version["status"] != "importing":
            return version
        time.sleep(0.2)
    raise AssertionError(f"import at {url} not finished after {timeout}s: {version}")


def imported(client: httpx.Client, data: bytes, name: str, **form: Any) -> dict[str, Any]:
    response = upload(client, data, name, **form)
    assert response.status_code == 202, response.text
    return wait_for_import(client, response.headers["Location"])


def all_items(client: httpx.Client, version: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 25, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{version['url']}/items", params=params).raise_for_status().json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_classification_folders_import_with_patient_groups(trainer: httpx.Client) -> None:
    version = imported(trainer, pneumonia_tiny_zip(), "pneumonia-tiny")
    assert version["status"] == "ready", (version["error_detail"], version["errors"])
    assert version["source_format"] == "folders" and version["task"] == "classification"
    assert version["labels"] == ["normal", "pneumonia"]
    assert version["progress"] == {"phase": "done", "done": 60, "total": 60}
    stats = version["stats"]
    assert stats["images"] == 60
    # dataset.json: 0.6/0.2/0.2 over 10 fake patients x 3 images per class.
    assert stats["counts"] == {
        "train": {"normal": 18, "pneumonia": 18},
        "validation": {"normal": 6, "pneumonia": 6},
        "test": {"normal": 6, "pneumonia": 6},
    }
    assert stats["image_size"]["width"] == {"min": 28, "median": 28, "max": 28}
    assert version["split_spec"]["group_by"] == "pattern"
    items = all_items(trainer, version)
    assert len(items) == 60 and len({i["sha256"] for i in items}) == 60
    splits_of_group: dict[str, set[str]] = defaultdict(set)
    for item in items:
        assert item["path"].split("/")[-2] == item["label"]
        splits_of_group[item["group_id"]].add(item["split"])
    assert len(splits_of_group) == 20
    assert all(len(s) == 1 for s in splits_of_group.values()), "a patient is in two splits"
    dataset = trainer.get(f"/v1/datasets/{version['dataset_id']}").json()
    assert dataset["latest"]["stats"]["counts"] == stats["counts"]


def test_new_upload_is_a_new_version_and_same_seed_same_split(trainer: httpx.Client) -> None:
    first = imported(trainer, pneumonia_tiny_zip(), "seeded", seed=7)
    second = imported(trainer, pneumonia_tiny_zip(), "seeded", seed=7)
    other = imported(trainer, pneumonia_tiny_zip(), "seeded", seed=8)
    assert [first["version"], second["version"], other["version"]] == [1, 2, 3]
    split = [{i["path"]: i["split"] for i in all_items(trainer, v)} for v in (first, second, other)]
    assert split[0] == split[1]
    assert split[0] != split[2]
    # Immutable: the first version is unchanged by later uploads.
    assert trainer.get(first["url"]).json()["stats"] == first["stats"]
