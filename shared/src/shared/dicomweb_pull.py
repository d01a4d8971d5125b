"""Pull a study from a PACS: series found by QIDO-RS, instances retrieved by WADO-RS.

Series are first filtered on what QIDO-RS returns (Modality, Series Description, Body Part
when the server includes it) against the tenant's routing rules, so a CT of 600 slices is
not downloaded for a chest radiograph rule; the retrieved headers are then routed exactly
like pushed ones. Files are written as Part 10 into a folder, the gateway's intake format.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dicomweb_client import DICOMwebClient

from shared.dicom_routing import Rule, SeriesInfo, StudyInfo, series_matches

_TAGS = {
    "series_uid": "0020000E",
    "modality": "00080060",
    "series_description": "0008103E",
    "body_part": "00180015",
    "study_description": "00081030",
}


def _value(item: dict[str, Any], key: str) -> str | None:
    element = item.get(_TAGS[key])
    values = (element or {}).get("Value") or []
    return str(values[0]) if values else None


def candidate_series(
    found: Sequence[dict[str, Any]],
    rules: Sequence[Rule] | None,
    requested: Sequence[str] | None,
) -> list[str]:
    """Series UIDs worth retrieving: the requested ones, that some rule could match.

    A criterion on an attribute QIDO did not return (SOP Class, often Body Part) is not
    judged here; the full headers decide after retrieval. `rules=None`: no rule filter
    (an explicit model was named).
    """
    keep = []
    for item in found:
        uid = _value(item, "series_uid")
        if not uid or (requested and uid not in requested):
            continue
        series = SeriesInfo(
            uid,
            _value(item, "modality") or "",
            _value(item, "body_part") or "",
            _value(item, "series_description") or "",
        )
        study = StudyInfo("", _value(item, "study_description") or "", None, [series])
        if rules is None or any(
            series_matches(_known(rule.match, item), series, study) for rule in rules
        ):
            keep.append(uid)
    return keep


def _known(match: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    judged = {"modality", "series_description", "study_description", "body_part"}
    return {
        k: v
        for k, v in match.items()
        if k in judged and (k == "modality" or _value(item, k) is not None)
    }


def pull_study(
    client: DICOMwebClient,
    *,
    study_uid: str,
    folder: Path,
    rules: Sequence[Rule] | None,
    requested_series: Sequence[str] | None,
    max_instances: int,
) -> int:
    """Retrieve the study's candidate series into `folder` as Part 10 files.

    Returns:
        The number of instances written (at most `max_instances`).

    Raises:
        requests.HTTPError / requests.ConnectionError: the PACS refused or is unreachable.
    """
    found = client.search_for_series(study_instance_uid=study_uid)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for series_uid in candidate_series(found, rules, requested_series):
        for ds in client.retrieve_series(study_uid, series_uid):
            if written >= max_instances:
                return written
            tmp = folder / f".{uuid.uuid4().hex}.part"
            ds.save_as(tmp, enforce_file_format=False)  # as retrieved (meta when sent)
            tmp.rename(folder / f"{uuid.uuid4().hex}.dcm")
            written += 1
    return written
