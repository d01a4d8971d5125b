"""Routing rules: matching on header attributes, bounded RE2 patterns, rule order."""

from __future__ import annotations

import pydicom
import pytest

from shared.delivery.reidentify import apply, capture
from shared.dicom_routing import (
    InstanceHeader,
    Rule,
    StudyInfo,
    group_study,
    route,
    validate_match,
)
from shared.errors import InvalidRequest
from shared.imaging.deid import deidentify
from tests.conftest import FIXTURES

CR = "1.2.840.10008.5.1.4.1.1.1"


def _study(
    *series: tuple[str, str, str], ae: str = "PACS", description: str = "CHEST PA"
) -> StudyInfo:
    headers = [
        InstanceHeader("1.2.3", f"1.2.3.{i}", f"1.2.3.{i}.1", CR, modality, part, description, desc)
        for i, (modality, part, desc) in enumerate(series)
    ]
    return group_study(headers, ae)


def test_first_matching_rule_wins_with_the_series_it_matched() -> None:
    study = _study(("CR", "CHEST", "PA"), ("MR", "HEAD", "T1"))
    rules = [
        Rule(1, "ct", {"modality": ["CT"]}),
        Rule(2, "cxr", {"modality": ["cr", "DX"], "study_description": "chest|thorax"}),
        Rule(3, "any", {}),
    ]
    decision = route(study, rules)
    assert decision is not None and decision.rule.name == "cxr"
    assert [s.modality for s in decision.series] == ["CR"]


def test_every_named_criterion_must_hold() -> None:
    study = _study(("CR", "CHEST", "PA"), ae="OTHER")
    assert route(study, [Rule(1, "r", {"calling_ae": ["PACS"]})]) is None
    assert route(study, [Rule(1, "r", {"series_description": "^lat"})]) is None
    assert route(study, [Rule(1, "r", {"sop_class_uid": [CR], "body_part": ["chest"]})])


@pytest.mark.parametrize("pattern", ["(a)\\1", "x" * 300, "(unclosed"])
def test_unsafe_or_invalid_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_match({"study_description": pattern})


def test_unknown_match_keys_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="unknown match keys"):
        validate_match({"modalty": ["CR"]})


def test_results_are_reidentified_into_the_original_study() -> None:
    data = (FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm").read_bytes()
    original = pydicom.dcmread(FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm")
    original.PatientID = "MRN-1"
    salt = b"salt"
    mapping: dict[str, object] = {}
    capture(original, salt, mapping)
    stored = pydicom.dcmread(__import__("io").BytesIO(deidentify(data, uid_salt=salt).data))
    assert stored.StudyInstanceUID != original.StudyInstanceUID
    back = apply(stored, mapping)
    assert back.StudyInstanceUID == original.StudyInstanceUID
    assert back.SOPInstanceUID == original.SOPInstanceUID
    assert back.PatientID == "MRN-1"
    assert stored.PatientID == ""  # the stored copy is untouched
