"""Dataset zips: members stored de-identified (DICOM profile, PNG/JPEG text stripped), patient
ids, group_pattern captures and member file names only as HMAC pseudonyms, the raw upload
deleted after import; the database and the blob store are searched for the originals."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, PngImagePlugin
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.datasets.importer import opaque_path
from shared.db.models import DatasetItem, DatasetVersion
from tests.conftest import FIXTURES, KeyFactory, client_for
from tests.factories import dataset_items, deid_secret, imported_dataset, zip_of

DICOM = FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm"


def _member(patient: int, n: int) -> bytes:
    ds = pydicom.dcmread(DICOM)
    ds.PatientName, ds.PatientID = f"Doe^Jane{patient}", f"MRN-{patient:04d}"
    ds.InstitutionName = "St Example Hospital"
    ds.SOPInstanceUID = f"1.2.3.{patient}.{n}"
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_dicom_members_are_stored_deidentified(
    stack: Stack, make_key: KeyFactory, db: sessionmaker[Session]
) -> None:
    entries = [
        (f"Task001_deid/rawdata/{label}/p{p}_{n}.dcm", _member(p, n))
        for p, label in enumerate(["normal"] * 4 + ["pneumonia"] * 4)
        for n in range(2)
    ]
    with client_for(stack, make_key(tenant="deid-datasets", scopes=("train",))) as client:
        version = imported_dataset(client, zip_of(entries), "deid")
        assert version["status"] == "ready", (version["error_detail"], version["errors"])
        items = dataset_items(client, version)
    assert len(items) == 16 and version["split_spec"]["group_by"] == "patient"
    assert len({i["group_id"] for i in items}) == 8  # one pseudonym per patient
    assert not any("MRN" in str(i["group_id"]) for i in items)
    store = stack.config.data_dir / "store"
    with db() as session:
        keys = session.scalars(
            select(DatasetItem.storage_key).where(DatasetItem.id.in_([i["id"] for i in items]))
        ).all()
    assert len(keys) == 16
    for key in keys:
        stored = (store / key).read_bytes()
        assert b"Doe^Jane" not in stored and b"MRN-" not in stored and b"Example" not in stored
        ds = pydicom.dcmread(BytesIO(stored))
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientID == ""
        assert ds.PixelData == pydicom.dcmread(DICOM).PixelData


NAME = "Zyxwv^Quintessa"  # a patient name no other test uses


def _rows_containing(db: sessionmaker[Session], needle: str) -> dict[str, int]:
    """Every table of the platform database, each row as text, searched for `needle`."""
    found = {}
    with db() as session:
        tables = session.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ).all()
        for table in tables:
            count = session.scalar(
                text(f'SELECT count(*) FROM "{table}" t WHERE t::text ILIKE :needle'),
                {"needle": f"%{needle}%"},
            )
            if count:
                found[table] = count
    return found


def _blobs_containing(stack: Stack, needles: list[str]) -> dict[str, list[Path]]:
    """Every file in the blob store (read once), searched for each needle."""
    found: dict[str, list[Path]] = {}
    for path in (stack.config.data_dir / "store").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                if needle.encode() in data:
                    found.setdefault(needle, []).append(path)
    return found


def _gray(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), "L")


def _png(seed: int) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", NAME)
    info.add_itxt("Author", NAME)
    out = BytesIO()
    _gray(seed).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def _jpeg(seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x013B] = NAME  # Artist
    out = BytesIO()
    _gray(seed).save(out, "JPEG", quality=95, exif=exif, comment=NAME.encode())
    return out.getvalue()


def _dicom(patient: str, n: int, *, burned_in: bool = False) -> bytes:
    ds = pydicom.dcmread(DICOM)
    ds.PatientName, ds.PatientID = NAME, patient
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.77.{int(patient[3:])}.{n}"
    if burned_in:
        ds.BurnedInAnnotation = "YES"
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_dicom_ids_names_and_raw_upload_are_gone_from_db_and_store(
    stack: Stack, make_key: KeyFactory, db: sessionmaker[Session]
) -> None:
    patients = [f"MRN77319{p:02d}" for p in range(8)]
    entries = [
        (
            f"Task001_ids/rawdata/{'normal' if p < 4 else 'pneumonia'}/{mrn}_{n}.dcm",
            _dicom(mrn, n, burned_in=(p, n) == (0, 0)),
        )
        for p, mrn in enumerate(patients)
        for n in range(2)
    ]
    with client_for(stack, make_key(tenant="deid-ids", scopes=("train",))) as client:
        version = imported_dataset(client, zip_of(entries), "ids")
        assert version["status"] == "ready", (version["error_detail"], version["errors"])
        items = dataset_items(client, version)
    assert (
        len({i["group_id"] for i in items}) == 8 and version["split_spec"]["group_by"] == "patient"
    )
    secret = deid_secret(stack)
    paths = {i["path"] for i in items}
    assert opaque_path(entries[0][0], secret, ["normal"]) in paths
    assert all(p.split("/")[-2] in ("normal", "pneumonia") and p.endswith(".dcm") for p in paths)
    # BurnedInAnnotation YES: stored (policy "flag", the default) and flagged on the item.
    flagged = [i for i in items if i["burned_in_annotation"]]
    assert [i["path"] for i in flagged] == [opaque_path(entries[0][0], secret, ["normal"])]
    for needle in [*patients, "Zyxwv"]:
        assert _rows_containing(db, needle) == {}, needle
    assert _blobs_containing(stack, [*patients, "Zyxwv"]) == {}
    with db() as session:
        key = session.scalar(
            select(DatasetVersion.upload_key).where(
                DatasetVersion.dataset_id == version["dataset_id"],
                DatasetVersion.version == version["version"],
            )
        )
    assert key and not (stack.config.data_dir / "store" / key).exists()  # raw zip deleted


def test_png_jpeg_members_lose_text_and_group_pattern_captures_are_pseudonyms(
    stack: Stack, make_key: KeyFactory, db: sessionmaker[Session]
) -> None:
    patients = [f"MRN88420{p:02d}" for p in range(8)]
    entries = []
    for p, mrn in enumerate(patients):
        label = "normal" if p < 4 else "pneumonia"
        entries.append((f"Task001_px/rawdata/{label}/{mrn}_a.png", _png(2 * p)))
        entries.append((f"Task001_px/rawdata/{label}/{mrn}_b.jpg", _jpeg(2 * p + 1)))
    with client_for(stack, make_key(tenant="deid-pixels", scopes=("train",))) as client:
        version = imported_dataset(client, zip_of(entries), "px", group_pattern=r"(MRN\d+)_")
        assert version["status"] == "ready", (version["error_detail"], version["errors"])
        items = dataset_items(client, version)
    assert version["split_spec"]["group_by"] == "pattern"
    assert len({i["group_id"] for i in items}) == 8
    for needle in [*patients, "Zyxwv"]:
        assert _rows_containing(db, needle) == {}, needle
    assert _blobs_containing(stack, [*patients, "Zyxwv"]) == {}
    store = stack.config.data_dir / "store"
    with db() as session:
        stored = session.execute(
            select(DatasetItem.path, DatasetItem.storage_key).where(
                DatasetItem.id.in_([i["id"] for i in items])
            )
        ).all()
    originals = dict(entries)
    secret = deid_secret(stack)
    for path, key in stored:
        source = next(
            p for p in originals if opaque_path(p, secret, ["normal", "pneumonia"]) == path
        )
        with Image.open(BytesIO(originals[source])) as before, Image.open(store / key) as after:
            np.testing.assert_array_equal(np.asarray(before), np.asarray(after))  # not re-encoded


def _annotated(fmt: str, patients: list[str]) -> bytes:
    """An RSNA-style CSV or a COCO file naming each image's patient, PNGs named by patient."""
    files = {f"images/{mrn}.png": _png(300 + n) for n, mrn in enumerate(patients)}
    if fmt == "rsna":
        rows = ["patientId,x,y,width,height,Target"]
        rows += [f"{mrn},2,3,10,12,1" for mrn in patients]
        files["stage_2_train_labels.csv"] = "\n".join(rows).encode()
    else:
        coco = {
            "images": [
                {"id": n, "file_name": f"{mrn}.png", "width": 28, "height": 28, "patient_id": mrn}
                for n, mrn in enumerate(patients)
            ],
            "annotations": [
                {"id": n, "image_id": n, "category_id": 1, "bbox": [2, 3, 10, 12]}
                for n in range(len(patients))
            ],
            "categories": [{"id": 1, "name": "opacity"}],
        }
        files["annotations.json"] = json.dumps(coco).encode()
    return zip_of(list(files.items()))


@pytest.mark.parametrize("fmt", ["rsna", "coco"])
def test_patient_ids_of_rsna_and_coco_files_are_only_pseudonyms(
    fmt: str, stack: Stack, make_key: KeyFactory, db: sessionmaker[Session]
) -> None:
    patients = [f"MRN{'55' if fmt == 'rsna' else '66'}4410{p:02d}" for p in range(12)]
    with client_for(stack, make_key(tenant=f"deid-{fmt}", scopes=("train",))) as client:
        version = imported_dataset(client, _annotated(fmt, patients), fmt)
        assert version["status"] == "ready", (version["error_detail"], version["errors"])
        assert version["source_format"] == fmt
        items = dataset_items(client, version)
    assert len({i["group_id"] for i in items}) == 12
    for needle in patients:
        assert _rows_containing(db, needle) == {}, needle
    assert _blobs_containing(stack, patients) == {}


def test_raw_upload_is_deleted_when_the_import_fails(
    stack: Stack, make_key: KeyFactory, db: sessionmaker[Session]
) -> None:
    entries = [(f"Task001_bad/rawdata/normal/MRN9911{n:02d}.png", _png(400 + n)) for n in range(4)]
    entries.append(("Task001_bad/rawdata/pneumonia/MRN991199.png", b"\x89PNG\r\n\x1a\nbroken"))
    with client_for(stack, make_key(tenant="deid-failed", scopes=("train",))) as client:
        version = imported_dataset(client, zip_of(entries), "bad")
    assert version["status"] == "failed"
    with db() as session:
        key = session.scalar(
            select(DatasetVersion.upload_key).where(
                DatasetVersion.dataset_id == version["dataset_id"],
                DatasetVersion.version == version["version"],
            )
        )
    assert key and not (stack.config.data_dir / "store" / key).exists()
