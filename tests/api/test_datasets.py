"""Datasets API end to end: real API, Postgres, Valkey and the cpu worker doing the import."""

from __future__ import annotations

import io
import json
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections import defaultdict
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from shared.pseudonyms import pseudonym
from tests.conftest import KeyFactory, client_for
from tests.factories import (
    dataset_items,
    deid_secret,
    imported_dataset,
    upload_dataset,
    zip_of,
)
from tests.fixtures.datasets import (
    BCCD_TINY,
    PNEUMONIA_TINY,
    bccd_tiny_zip,
    pneumonia_tiny_zip,
    zip_folder,
)

ZIP = "application/zip"
# Old names, still imported by tests/api/test_deletion.py (unfinished edits elsewhere).
imported = imported_dataset


def stored_name(stack: Stack, file_name: str) -> str:
    """The opaque name an item's file gets (shared.datasets.importer.opaque_path)."""
    stem, _, ext = file_name.rpartition(".")
    return f"{pseudonym('file', stem, deid_secret(stack))}.{ext.lower()}"


@pytest.fixture(scope="module")
def trainer(stack: Stack, make_key: KeyFactory) -> httpx.Client:
    return client_for(stack, make_key(tenant="datasets-a", scopes=("train",)))


def test_classification_folders_import_with_patient_groups(trainer: httpx.Client) -> None:
    version = imported_dataset(trainer, pneumonia_tiny_zip(), "pneumonia-tiny")
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
    items = dataset_items(trainer, version)
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
    first = imported_dataset(trainer, pneumonia_tiny_zip(), "seeded", seed=7)
    second = imported_dataset(trainer, pneumonia_tiny_zip(), "seeded", seed=7)
    other = imported_dataset(trainer, pneumonia_tiny_zip(), "seeded", seed=8)
    assert [first["version"], second["version"], other["version"]] == [1, 2, 3]
    split = [
        {i["path"]: i["split"] for i in dataset_items(trainer, v)} for v in (first, second, other)
    ]
    assert split[0] == split[1]
    assert split[0] != split[2]
    # Immutable: the first version is unchanged by later uploads.
    assert trainer.get(first["url"]).json()["stats"] == first["stats"]


def _bccd_objects() -> dict[str, list[tuple[str, list[float]]]]:
    """The fixture's VOC boxes, to rebuild them as COCO / Label Studio / RSNA."""
    objects = {}
    for xml in sorted((BCCD_TINY / "Annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        objects[root.findtext("filename") or ""] = [
            (
                o.findtext("name") or "",
                [float(o.findtext(f"bndbox/{t}") or 0) for t in ("xmin", "ymin", "xmax", "ymax")],
            )
            for o in root.iter("object")
        ]
    return objects


def _bccd_images_with(annotation_name: str, annotation: bytes) -> bytes:
    return zip_folder(
        BCCD_TINY,
        include=lambda p: p.parts[0] == "JPEGImages",
        extra={annotation_name: annotation},
    )


def test_voc_detection_import(trainer: httpx.Client) -> None:
    version = imported_dataset(trainer, bccd_tiny_zip(), "bccd-voc")
    assert version["status"] == "ready", (version["error_detail"], version["errors"])
    assert version["source_format"] == "voc" and version["task"] == "detection"
    assert version["labels"] == ["Platelets", "RBC", "WBC"]
    stats = version["stats"]
    boxes: dict[str, int] = defaultdict(int)
    for per_split in stats["boxes"].values():
        for label, n in per_split.items():
            boxes[label] += n
    assert dict(boxes) == {"RBC": 127, "WBC": 8, "Platelets": 8}
    assert stats["image_size"]["width"] == {"min": 640, "median": 640, "max": 640}
    item = dataset_items(trainer, version)[0]
    assert item["label"] is None and item["boxes"][0].keys() == {"label", "box"}


def test_coco_detection_import(trainer: httpx.Client) -> None:
    objects = _bccd_objects()
    labels = sorted({label for boxes in objects.values() for label, _ in boxes})
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(labels)]
    for image_id, (file_name, boxes) in enumerate(objects.items(), start=1):
        coco["images"].append({"id": image_id, "file_name": file_name, "width": 640, "height": 480})
        coco["annotations"] += [
            {
                "id": len(coco["annotations"]) + k,
                "image_id": image_id,
                "category_id": labels.index(label) + 1,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            }
            for k, (label, b) in enumerate(boxes)
        ]
    data = _bccd_images_with("annotations/instances.json", json.dumps(coco).encode())
    version = imported_dataset(trainer, data, "bccd-coco")
    assert version["status"] == "ready", (version["error_detail"], version["errors"])
    assert version["source_format"] == "coco"
    total = sum(n for per_split in version["stats"]["boxes"].values() for n in per_split.values())
    assert total == 143


def test_label_studio_detection_import_converts_percentages(
    trainer: httpx.Client, stack: Stack
) -> None:
    tasks = []
    for n, (file_name, boxes) in enumerate(_bccd_objects().items()):
        result = [
            {
                "type": "rectanglelabels",
                "original_width": 640,
                "original_height": 480,
                "value": {
                    "x": b[0] / 6.4,
                    "y": b[1] / 4.8,
                    "width": (b[2] - b[0]) / 6.4,
                    "height": (b[3] - b[1]) / 4.8,
                    "rectanglelabels": [label],
                },
            }
            for label, b in boxes
        ]
        tasks.append(
            {
                "id": n,
                "data": {"image": f"/data/upload/1/0a1b2c3d-{file_name}"},
                "annotations": [{"result": result}],
            }
        )
    data = _bccd_images_with("export.json", json.dumps(tasks).encode())
    refused = upload_dataset(trainer, data, "bccd-ls")  # either task fits a Label Studio export
    assert refused.status_code == 422 and "send `task`" in refused.json()["detail"]
    version = imported_dataset(trainer, data, "bccd-ls", task="detection")
    assert version["status"] == "ready", (version["error_detail"], version["errors"])
    assert version["source_format"] == "labelstudio" and version["task"] == "detection"
    items = {i["path"].split("/")[-1]: i for i in dataset_items(trainer, version)}
    first = _bccd_objects()["BloodImage_00000.jpg"][0]
    assert items[stored_name(stack, "BloodImage_00000.jpg")]["boxes"][0] == {
        "label": first[0],
        "box": pytest.approx(first[1], abs=0.01),
    }


def test_rsna_csv_import_groups_by_patient(trainer: httpx.Client) -> None:
    pngs = sorted((PNEUMONIA_TINY / "Task001_pneumonia" / "rawdata").rglob("*.png"))[:12]
    files = {f"images/{p.stem}.png": p.read_bytes() for p in pngs}
    rows = ["patientId,x,y,width,height,Target"]
    for n, p in enumerate(pngs):
        rows += [f"{p.stem},2,3,10,12,1", f"{p.stem},15,15,8,8,1"] if n % 2 else [f"{p.stem},,,,,0"]
    files["stage_2_train_labels.csv"] = "\n".join(rows).encode()
    version = imported_dataset(trainer, zip_of(list(files.items())), "rsna-like")
    assert version["status"] == "ready", (version["error_detail"], version["errors"])
    assert version["source_format"] == "rsna" and version["labels"] == ["opacity"]
    assert version["stats"]["images"] == 12 and version["stats"]["images_without_boxes"] == 6
    items = dataset_items(trainer, version)
    groups = {i["group_id"] for i in items}  # HMAC pseudonyms of the patientIds, never clear
    assert len(groups) == len(pngs) and not groups & {p.stem for p in pngs}
    assert all(g.startswith("group-") for g in groups)
    boxed = next(i for i in items if i["boxes"])
    assert boxed["boxes"][0] == {"label": "opacity", "box": [2.0, 3.0, 12.0, 15.0]}


def test_presplit_folders_keep_their_split_and_leaks_fail(trainer: httpx.Client) -> None:
    root = PNEUMONIA_TINY / "Task001_pneumonia" / "rawdata"
    pngs = sorted(root.rglob("*.png"))

    def presplit(split_of: Any) -> bytes:
        files = {f"{split_of(p)}/{p.parent.name}/{p.name}": p.read_bytes() for p in pngs}
        return zip_of(list(files.items()))

    by_patient = {"1": "validation", "2": "test"}  # pat0X1/pat0X2 -> val/test, others train
    good = presplit(lambda p: by_patient.get(p.name[5], "train"))
    version = imported_dataset(trainer, good, "presplit", group_pattern=r"^(pat\d+)_")
    assert version["status"] == "ready", (version["error_detail"], version["errors"])
    assert version["split_spec"]["presplit"] is True
    assert version["stats"]["images_per_split"] == {"train": 48, "validation": 6, "test": 6}
    leaky = presplit(lambda p: "test" if p.name.endswith("img3.png") else "train")
    version = imported_dataset(trainer, leaky, "presplit-leak", group_pattern=r"^(pat\d+)_")
    assert version["status"] == "failed"
    leaks = [e for e in version["errors"] if e["problem"] == "in several splits: ['test', 'train']"]
    assert leaks and all(e["file"].startswith("group group-") for e in leaks)
    assert "pat001" not in str(version["errors"])  # the captured patient id is pseudonymised


def _broken_voc() -> bytes:
    """BCCD with a truncated JPEG, a duplicate image, a zero-area and an out-of-image box."""
    xml0 = (BCCD_TINY / "Annotations" / "BloodImage_00000.xml").read_text()
    xml1 = (BCCD_TINY / "Annotations" / "BloodImage_00001.xml").read_text()
    xml0 = xml0.replace("<xmax>491</xmax>", "<xmax>260</xmax>", 1)  # WBC: xmin 260 -> no area
    xml1 = xml1.replace("<ymax>", "<ymax>9", 1)  # 3-digit ymax -> 9xxx, far below the image
    jpg2 = (BCCD_TINY / "JPEGImages" / "BloodImage_00002.jpg").read_bytes()
    jpg3 = (BCCD_TINY / "JPEGImages" / "BloodImage_00003.jpg").read_bytes()
    return zip_folder(
        BCCD_TINY,
        include=lambda p: (
            p.stem not in ("BloodImage_00000", "BloodImage_00001") or p.suffix == ".jpg"
        ),
        extra={
            "Annotations/BloodImage_00000.xml": xml0.encode(),
            "Annotations/BloodImage_00001.xml": xml1.encode(),
            "JPEGImages/BloodImage_00099.jpg": jpg2[: len(jpg2) // 2],
            "JPEGImages/BloodImage_00098.jpg": jpg3,
        },
    )


def test_invalid_dataset_fails_listing_each_problem_by_file(trainer: httpx.Client) -> None:
    version = imported_dataset(trainer, _broken_voc(), "broken-voc")
    assert version["status"] == "failed" and version["error_type"] == "invalid-dataset"
    problems = {e["file"]: e["problem"] for e in version["errors"]}
    assert problems["JPEGImages/BloodImage_00099.jpg"].startswith("unreadable image")
    assert "degenerate box WBC" in problems["JPEGImages/BloodImage_00000.jpg"]
    assert "outside the 640x480 image" in problems["JPEGImages/BloodImage_00001.jpg"]
    assert problems["JPEGImages/BloodImage_00098.jpg"] == (
        "same content (sha256) as JPEGImages/BloodImage_00003.jpg"
    )
    assert "4 problem(s)" in version["error_detail"]
    assert dataset_items(trainer, version) == []  # nothing half-imported


def test_duplicates_can_be_dropped(trainer: httpx.Client, stack: Stack) -> None:
    png = next((PNEUMONIA_TINY / "Task001_pneumonia" / "rawdata" / "normal").glob("*.png"))
    data = zip_folder(
        PNEUMONIA_TINY, extra={"Task001_pneumonia/rawdata/normal/pat001_copy.png": png.read_bytes()}
    )
    assert imported_dataset(trainer, data, "dupes")["status"] == "failed"
    version = imported_dataset(trainer, data, "dupes-dropped", on_duplicate="drop")
    assert version["status"] == "ready", version["errors"]
    assert version["stats"]["images"] == 60
    dropped = version["stats"]["dropped_duplicates"][0]["file"]
    assert dropped.endswith(stored_name(stack, "pat001_copy.png")) and "pat001" not in dropped


def test_empty_declared_class_and_unknown_label_fail(trainer: httpx.Client) -> None:
    spec = json.loads((PNEUMONIA_TINY / "Task001_pneumonia" / "dataset.json").read_text())
    spec["labels"] = ["normal", "pneumonia", "covid"]
    png = next((PNEUMONIA_TINY / "Task001_pneumonia" / "rawdata" / "normal").glob("*.png"))
    data = zip_folder(
        PNEUMONIA_TINY,
        include=lambda p: p.name != "dataset.json",
        extra={
            "Task001_pneumonia/dataset.json": json.dumps(spec).encode(),
            "Task001_pneumonia/rawdata/effusion/pat099_img1.png": _reencoded(png.read_bytes()),
        },
    )
    version = imported_dataset(trainer, data, "bad-labels")
    problems = {(e["file"], e["problem"]) for e in version["errors"]}
    assert ("(dataset)", "class 'covid' is empty") in problems
    assert (
        "Task001_pneumonia/rawdata/effusion/pat099_img1.png",
        "label 'effusion' not in `labels`",
    ) in problems


def _reencoded(png: bytes) -> bytes:
    """Same pixels, different bytes (so it is not a content duplicate)."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(png)).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def _symlink() -> bytes:
    info = zipfile.ZipInfo("rawdata/normal/link.png")
    info.create_system = 3
    info.external_attr = (0o120777) << 16
    return zip_of([(info, b"/etc/passwd")])


def _claims_huge_size() -> bytes:
    data = bytearray(zip_of([("rawdata/normal/a.png", b"x" * 100)]))
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = (0xFFFFFFF0).to_bytes(4, "little")
    return bytes(data)


HOSTILE = {
    "traversal": (zip_of([("../../etc/evil.png", b"x")]), 422, "unsafe-archive", "outside"),
    "absolute": (zip_of([("/etc/evil.png", b"x")]), 422, "unsafe-archive", "absolute path"),
    "symlink": (_symlink(), 422, "unsafe-archive", "symbolic link"),
    "bomb": (zip_of([("a.png", bytes(50 * 1024 * 1024))]), 413, "archive-too-large", "zip bomb"),
    "huge-claim": (_claims_huge_size(), 413, "archive-too-large", "limit per file"),
    "not-a-zip": (b"%PDF-1.4 not a zip", 415, "unsupported-archive", "not a zip"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_zips_are_refused_at_upload(trainer: httpx.Client, case: str) -> None:
    data, status, type_, words = HOSTILE[case]
    response = upload_dataset(trainer, data, f"hostile-{case}")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith(type_) and words in response.json()["detail"]
    assert trainer.get("/healthz").status_code == 200


def test_tenant_isolation_and_scopes(
    trainer: httpx.Client, stack: Stack, make_key: KeyFactory
) -> None:
    version = imported_dataset(trainer, pneumonia_tiny_zip(), "private")
    with client_for(stack, make_key(tenant="datasets-b", scopes=("train",))) as other:
        assert other.get(f"/v1/datasets/{version['dataset_id']}").status_code == 404
        assert other.get(version["url"]).status_code == 404
        assert other.get(f"{version['url']}/items").status_code == 404
        names = [d["name"] for d in other.get("/v1/datasets").json()["items"]]
        assert "private" not in names
    with client_for(stack, make_key(tenant="datasets-a", scopes=("jobs:read",))) as reader:
        assert reader.get(version["url"]).status_code == 200
        assert upload_dataset(reader, pneumonia_tiny_zip(), "nope").status_code == 403
    assert trainer.get(f"/v1/datasets/{uuid.uuid4()}").status_code == 404


def test_datasets_are_addressed_by_name_as_models_are(trainer: httpx.Client) -> None:
    version = imported_dataset(trainer, pneumonia_tiny_zip(), "by-name")
    by_name = trainer.get("/v1/datasets/by-name")
    assert by_name.status_code == 200, by_name.text
    assert by_name.json() == trainer.get(f"/v1/datasets/{version['dataset_id']}").json()
    first = trainer.get("/v1/datasets/by-name/versions/1").json()
    assert (first["dataset_id"], first["url"]) == (version["dataset_id"], version["url"])
    page = trainer.get("/v1/datasets/by-name/versions/1/items", params={"limit": 5}).json()
    assert len(page["items"]) == 5
    missing = trainer.get("/v1/datasets/no-such-dataset")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["type"].endswith("dataset-not-found")
