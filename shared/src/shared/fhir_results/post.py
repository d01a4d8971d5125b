"""Post a job's FHIR Bundle to a hospital's FHIR server as a transaction (gateway side).

A FHIR destination is a row of `dicom_destination` (kind `fhir`) and its deliveries are rows
of the DICOM result outbox, so retries, backoff and the job view's per-destination status are
those of STOW-RS and C-STORE. Every resource is PUT at its stable id, so a retry or a second
delivery updates what the server holds instead of adding copies. An attempt counts as
delivered only when the transaction-response reports every entry 200/201 *and* a read of the
DiagnosticReport returns it, much as a STOW-RS counts only once QIDO-RS finds the objects.
"""

from __future__ import annotations

import uuid
from typing import Any

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from shared.config import Settings
from shared.db.dicom_models import DicomDestination, DicomStudy, PacsAuth
from shared.db.models import ImageStatus, Job, ModelVersion
from shared.dicomweb import HostPolicy, validate_base_url
from shared.fhir_results.bundle import build_bundle
from shared.fhir_results.facts import DicomUids, dicom_uids, job_facts, reidentified
from shared.storage import BlobStore

FHIR_JSON = "application/fhir+json"
TIMEOUT_SECONDS = 30.0
SETTING = "MEDIMG_FHIR_ALLOWED_HOSTS"


class FhirDeliveryError(Exception):
    """A retryable failure of one attempt (server down, refused, or not confirmed)."""


def validate_fhir_url(url: str, settings: Settings) -> str:
    """Check a FHIR server base URL against MEDIMG_FHIR_ALLOWED_HOSTS (resolves DNS).

    Raises:
        InvalidRequest: not allowed (see shared.dicomweb.validate_base_url).
    """
    policy = HostPolicy.from_entries(settings.fhir_allowed_hosts, settings.fhir_allow_http)
    return validate_base_url(url, policy, what="FHIR server", setting=SETTING)


def transaction_for(session: Session, *, job_id: uuid.UUID, store: BlobStore) -> dict[str, Any]:
    """The transaction Bundle of a succeeded job, re-identified for the hospital's server."""
    job = session.scalars(
        select(Job)
        .where(Job.id == job_id)
        .options(
            selectinload(Job.model_version).selectinload(ModelVersion.model),
            selectinload(Job.images),
        )
    ).one()
    uids: dict[int, DicomUids] = {}
    for image in job.images:
        if image.format == "dicom" and image.status == ImageStatus.SUCCEEDED:
            found = dicom_uids(store.path(image.storage_key))  # the header only
            if found is not None:
                uids[image.index] = found
    mapping: dict[str, Any] | None = session.scalar(
        select(DicomStudy.reidentify).where(DicomStudy.job_id == job.id)
    )
    return build_bundle(reidentified(job_facts(job, uids), mapping), bundle_type="transaction")


def post_transaction(
    destination: DicomDestination, bundle: dict[str, Any], settings: Settings
) -> list[str]:
    """POST the transaction, check every entry, read the report back.

    Returns:
        The `Type/id` of every resource the server now holds.

    Raises:
        FhirDeliveryError: refused, failed or not confirmed (the outbox retries).
        InvalidRequest: the destination's host is no longer allowed.
    """
    base = validate_fhir_url(destination.base_url or "", settings)
    http = _session(destination)
    refs = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]]
    try:
        answer = http.post(
            base,
            json=bundle,
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            timeout=TIMEOUT_SECONDS,
            allow_redirects=False,  # a redirect must not carry the report elsewhere
        )
        _check_response(answer, len(refs))
        report = next(r for r in refs if r.startswith("DiagnosticReport/"))
        read = http.get(
            f"{base}/{report}",
            headers={"Accept": FHIR_JSON},
            timeout=TIMEOUT_SECONDS,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        raise FhirDeliveryError(f"{type(exc).__name__} from {base}: {exc}") from exc
    if read.status_code != 200 or _json(read).get("id") != report.split("/", 1)[1]:
        raise FhirDeliveryError(
            f"the transaction was answered but GET {report} gives HTTP {read.status_code}: "
            "not counted as delivered"
        )
    return refs


def _session(destination: DicomDestination) -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # no proxy or netrc from the environment
    http.verify = destination.verify_tls
    if destination.auth == PacsAuth.BASIC:
        http.auth = (destination.username or "", destination.secret or "")
    elif destination.auth == PacsAuth.BEARER:
        http.headers["Authorization"] = f"Bearer {destination.secret or ''}"
    return http


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _check_response(answer: requests.Response, expected: int) -> None:
    if answer.status_code != 200:
        issue = _outcome_text(_json(answer))
        raise FhirDeliveryError(
            f"the FHIR server answered HTTP {answer.status_code} to the transaction"
            + (f": {issue}" if issue else "")
        )
    body = _json(answer)
    entries = body.get("entry") or []
    if body.get("type") != "transaction-response" or len(entries) != expected:
        raise FhirDeliveryError(
            f"not a transaction-response with {expected} entries "
            f"(type {body.get('type')!r}, {len(entries)} entries)"
        )
    for i, entry in enumerate(entries):
        status = str((entry.get("response") or {}).get("status", ""))
        if not status.startswith(("200", "201")):
            raise FhirDeliveryError(f"entry {i} of the transaction answered {status!r}")


def _outcome_text(body: dict[str, Any]) -> str:
    """The diagnostics of an OperationOutcome, if the server sent one."""
    if body.get("resourceType") != "OperationOutcome":
        return ""
    texts = [
        str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
        for i in body.get("issue", [])
    ]
    return "; ".join(texts)[:300]
