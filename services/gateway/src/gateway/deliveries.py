"""The gateway's delivery loop: result objects of finished jobs to their destinations."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway import metrics
from gateway.settings import GatewaySettings
from shared.db.dicom_models import DestinationKind, DicomDestination, DicomStudy, PacsEndpoint
from shared.db.models import Job, JobStatus
from shared.delivery import Claimed, claim_due, record_outcome
from shared.delivery.reidentify import apply
from shared.delivery.senders import DeliveryError, Sent, c_store, stow
from shared.storage import BlobStore

log = logging.getLogger(__name__)
BATCH = 8


class Deliveries:
    def __init__(
        self, *, sessionmaker: sessionmaker[Session], settings: GatewaySettings, store: BlobStore
    ) -> None:
        self.sessionmaker, self.settings, self.store = sessionmaker, settings, store

    def run_once(self) -> int:
        with self.sessionmaker() as session:
            claimed = claim_due(
                session, limit=BATCH, lease_seconds=self.settings.dicom_delivery_lease_seconds
            )
        for item in claimed:
            self._deliver(item)
        return len(claimed)

    def _deliver(self, item: Claimed) -> None:
        error: str | None
        permanent, uids = False, []
        with self.sessionmaker() as session:
            try:
                sent = self._send(session, item)
                error, uids = None, sent.sop_instance_uids
            except DeliveryError as exc:
                error = str(exc)
            except _Permanent as exc:
                error, permanent = str(exc), True
            except Exception as exc:  # a bug or a broken object: retried, then failed, logged
                log.exception("delivery %s failed", item.id)
                error = f"{type(exc).__name__}: {exc}"
            outcome = record_outcome(
                session,
                item,
                error=error,
                permanent=permanent,
                max_attempts=self.settings.dicom_delivery_max_attempts,
                backoff_base=self.settings.dicom_delivery_backoff_seconds,
                backoff_cap=self.settings.dicom_delivery_backoff_max_seconds,
                sop_instance_uids=uids,
            )
        metrics.DELIVERIES.labels(item.payload.get("kind", "?"), outcome).inc()
        log.info(
            "result delivery attempt",
            extra={
                "delivery_id": str(item.id),
                "job_id": str(item.job_id),
                "outcome": outcome,
                "attempt": item.attempts,
                "error": error,
            },
        )

    def _send(self, session: Session, item: Claimed) -> Sent:
        job = session.get(Job, item.job_id)
        if job is None or job.status != JobStatus.SUCCEEDED:
            raise _Permanent(f"job is {job.status if job else 'gone'}: no results to send")
        destination = session.get(DicomDestination, _uuid(item.payload["destination_id"]))
        if destination is None:
            raise _Permanent("the destination was deleted")
        if destination.kind == DestinationKind.FHIR:
            return self._send_fhir(session, job, destination)
        from shared.dicom_results import build_job_objects  # the results side (highdicom)

        objects = build_job_objects(session, job_id=job.id, store=self.store)
        if not objects:
            raise _Permanent("the job produced no result objects")
        mapping: dict[str, Any] | None = session.scalar(
            select(DicomStudy.reidentify).where(DicomStudy.job_id == job.id)
        )
        datasets = [apply(o.dataset, mapping) for o in objects]
        if destination.kind == DestinationKind.STOW:
            endpoint = session.get(PacsEndpoint, destination.pacs_id)
            if endpoint is None:
                raise _Permanent("the destination's PACS endpoint was deleted")
            return stow(endpoint, datasets)
        return c_store(destination, datasets, self.settings.dicom_ae_title)

    def _send_fhir(self, session: Session, job: Job, destination: DicomDestination) -> Sent:
        """The job's FHIR Bundle as a transaction (shared.fhir_results.post)."""
        from shared.errors import InvalidRequest
        from shared.fhir_results.post import FhirDeliveryError, post_transaction, transaction_for

        bundle = transaction_for(session, job_id=job.id, store=self.store)
        try:
            post_transaction(destination, bundle, self.settings)
        except FhirDeliveryError as exc:
            raise DeliveryError(str(exc)) from exc
        except InvalidRequest as exc:  # the host left the allow-list: no retry can help
            raise _Permanent(exc.detail) from exc
        return Sent([])


class _Permanent(Exception):
    """Nothing a retry could change."""


def _uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)
