"""PS3.15 basic-profile de-identification: identifiers gone, UIDs consistent, pixels identical."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from shared.imaging.decode import decode_image
from shared.imaging.deid import deidentify, hashed_uid

FIXTURES = Path(__file__).parents[1] / "fixtures"
DICOMS = [
    FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm",
    FIXTURES / "pneumoniamnist" / "test_0000_pneumonia_mono1.dcm",
    FIXTURES / "dicom" / "JPEG-LL.dcm",
    FIXTURES / "dicom" / "emri_small_RLE.dcm",
    FIXTURES / "dicom" / "693_J2KR.dcm",
]
PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-4711",
    "PatientBirthDate": "19700101",
    "InstitutionName": "St Example Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Grey^Meredith",
    "AccessionNumber": "ACC-99",
    "OperatorsName": "Tech^Tom",
    "StudyDescription": "CHEST Jane Doe follow-up",
}


def with_phi(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.BurnedInAnnotation = "YES"
    ds.add_new(0x00091010, "LO", "private Jane Doe")
    person = Dataset()
    person.PersonName = "Doe^John"
    ds.ReferringPhysicianIdentificationSequence = [person]
    ds.StudyInstanceUID = "1.2.3.4.5.6.7"
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.mark.parametrize("path", DICOMS, ids=lambda p: p.name)
def test_identifiers_are_removed_and_pixels_are_identical(path: Path) -> None:
    original = with_phi(path)
    result = deidentify(original, uid_salt=b"salt")
    ds = pydicom.dcmread(BytesIO(result.data))
    for value in (*PHI.values(), "Doe^John", "Jane Doe"):
        assert value.encode() not in result.data, value
    assert ds.PatientName == "" and ds.PatientID == "" and "InstitutionName" not in ds
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert ds.PatientIdentityRemoved == "YES" and "Basic" in ds.DeidentificationMethod
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert ds.BurnedInAnnotation == "YES" and result.burned_in_annotation == "YES"
    assert ds.StudyInstanceUID == hashed_uid("1.2.3.4.5.6.7", b"salt")
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == pydicom.dcmread(BytesIO(original)).SOPClassUID  # standard UID kept
    assert ds.file_meta.TransferSyntaxUID == pydicom.dcmread(path).file_meta.TransferSyntaxUID
    before = decode_image(original, max_pixels=10**8)
    after = decode_image(result.data, max_pixels=10**8)
    np.testing.assert_array_equal(before.pixels, after.pixels)
    assert ds.PixelData == pydicom.dcmread(BytesIO(original)).PixelData


def test_uids_are_consistent_per_salt_and_valid() -> None:
    uid = hashed_uid("1.2.840.113619.2.55.3", b"s")
    assert (
        uid
        == hashed_uid("1.2.840.113619.2.55.3", b"s")
        != hashed_uid("1.2.840.113619.2.55.3", b"t")
    )
    assert uid.startswith("2.25.") and len(uid) <= 64 and uid[5:].isdigit()


def test_decoded_meta_keeps_only_processing_fields() -> None:
    decoded = decode_image(with_phi(DICOMS[0]), max_pixels=10**8)
    allowed = {"bits_stored", "photometric", "modality", "frames", "transfer_syntax", "window",
               "rescale", "mode"}  # fmt: skip
    assert set(decoded.meta) <= allowed
    assert not any(v in str(decoded.meta) for v in PHI.values())
