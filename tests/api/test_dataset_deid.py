"""Dataset zips: DICOM members are stored de-identified, patient ids only as HMAC pseudonyms."""

from __future__ import annotations

from io import BytesIO

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.db.models import DatasetItem
from tests.api.test_datasets import _zip, all_items, imported
from tests.conftest import FIXTURES, KeyFactory, client_for

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
        version = imported(client, _zip(entries), "deid")
        assert version["status"] == "ready", (version["error_detail"], version["errors"])
        items = all_items(client, version)
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
