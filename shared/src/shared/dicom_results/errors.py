"""Why a job has no DICOM result objects (rendered as problem+json by the API)."""

from __future__ import annotations

from shared.errors import Conflict, NotFound


class ResultsNotReady(Conflict):
    type = "results-not-ready"
    title = "The job has no results yet"


class NoDicomInput(NotFound):
    type = "no-dicom-input"
    title = "The job has no DICOM input"
