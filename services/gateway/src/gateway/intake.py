"""A complete study -> routing -> de-identification -> a job, in one transaction.

Runs on the gateway's spool thread, never on an association thread. The job is built and
sent by shared.job_intake exactly as an upload's is; its result deliveries are outbox rows
added in the same transaction (shared.delivery), so a job never exists without them.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway import metrics
from gateway.settings import GatewaySettings
from shared.audit import record_sync
from shared.db.base import utcnow
from shared.db.dicom_models import (
    DicomCallingAe,
    DicomDestination,
    DicomStudy,
    RoutingRule,
    StudySource,
    StudyStatus,
)
from shared.db.models import Priority
from shared.delivery import enqueue_deliveries
from shared.delivery.reidentify import capture
from shared.dicom_routing import InstanceHeader, Rule, group_study, route
from shared.errors import AppError
from shared.imaging.decode import probe_image
from shared.imaging.deid import deidentify
from shared.job_intake import StoredImage, check_params, new_job, pick_queue, send_inference
from shared.registry import resolve_model_version
from shared.schemas.jobs import JobParams
from shared.storage import BlobStore

log = logging.getLogger(__name__)
FINAL_STUDY = (StudyStatus.ROUTED, StudyStatus.UNMATCHED, StudyStatus.FAILED)


def header_of(path: Path) -> InstanceHeader | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return InstanceHeader(
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.get("SeriesInstanceUID", "")),
            sop_uid=str(ds.get("SOPInstanceUID", path.stem)),
            sop_class_uid=str(ds.get("SOPClassUID", "")),
            modality=str(ds.get("Modality", "")),
            body_part=str(ds.get("BodyPartExamined", "")),
            study_description=str(ds.get("StudyDescription", "")),
            series_description=str(ds.get("SeriesDescription", "")),
        )
    except Exception as exc:  # unreadable: left out of the study
        log.warning("unreadable spooled instance %s: %s", path.name, exc)
        return None


def tenant_rules(session: Session, tenant_id: uuid.UUID) -> list[RoutingRule]:
    return list(
        session.scalars(
            select(RoutingRule)
            .where(RoutingRule.tenant_id == tenant_id, RoutingRule.enabled.is_(True))
            .order_by(RoutingRule.position, RoutingRule.name)
        ).all()
    )


@dataclass(frozen=True)
class Plan:
    model_ref: str
    params: dict[str, Any]
    priority: str
    destination_ids: list[str]
    rule_id: uuid.UUID | None


class Intake:
    def __init__(
        self,
        *,
        sessionmaker: sessionmaker[Session],
        settings: GatewaySettings,
        store: BlobStore,
        celery: Celery,
    ) -> None:
        self.sessionmaker, self.settings, self.store, self.celery = (
            sessionmaker,
            settings,
            store,
            celery,
        )

    def handle(self, intake_id: uuid.UUID, meta: dict[str, Any], files: list[Path]) -> None:
        """Process one ready study folder; idempotent on `intake_id`."""
        with self.sessionmaker() as session:
            study = session.get(DicomStudy, intake_id)
            if study is not None and study.status in FINAL_STUDY:
                return
            source = str(meta.get("source", StudySource.DIMSE))
            calling_ae = meta.get("calling_ae")
            if study is None:
                tenant_id = session.scalar(
                    select(DicomCallingAe.tenant_id).where(DicomCallingAe.ae_title == calling_ae)
                )
                if tenant_id is None:
                    log.warning("AE %s is no longer registered: study dropped", calling_ae)
                    return
                study = DicomStudy(
                    id=intake_id,
                    tenant_id=tenant_id,
                    source=source,
                    status=StudyStatus.PENDING,
                    calling_ae=calling_ae,
                    study_instance_uid="",
                    requested={},
                    summary={},
                )
                session.add(study)
            sendable: tuple[str, Priority] | None = None
            try:
                sendable = self._route(session, study, files)
            except AppError as exc:
                study.status, study.error_type, study.reason = (
                    StudyStatus.FAILED,
                    exc.type,
                    exc.detail,
                )
            study.updated_at = utcnow()
            metrics.STUDIES.labels(source, study.status).inc()
            job_id = study.job_id
            session.commit()
        if job_id is not None and sendable is not None:
            try:
                send_inference(self.celery, job_id=job_id, queue=sendable[0], priority=sendable[1])
            except (BrokerError, OSError) as exc:  # committed: the API's reconciler re-sends
                log.warning("broker unavailable for job %s: %s", job_id, exc)

    def _route(
        self, session: Session, study: DicomStudy, files: list[Path]
    ) -> tuple[str, Priority] | None:
        """Route the study; the new job's (queue, priority) when one was created."""
        headers = {p: h for p in files if (h := header_of(p)) is not None}
        info = group_study(headers.values(), study.calling_ae)
        study.study_instance_uid = study.study_instance_uid or info.uid
        study.summary = info.summary()
        plan, series = self._plan(session, study, info)
        if plan is None:
            study.status, study.reason = StudyStatus.UNMATCHED, "no routing rule matched"
            return None
        wanted = {uid for s in series for uid in s.sop_uids}
        chosen = [p for p, h in headers.items() if h.sop_uid in wanted]
        version = resolve_model_version(session, plan.model_ref, study.tenant_id)
        params = JobParams.model_validate(plan.params)
        check_params(version, params)
        images, reid = self._store_images(chosen[: self.settings.max_files_per_job])
        if not images:
            study.status, study.reason = StudyStatus.FAILED, "no instance with usable pixel data"
            return None
        job = new_job(
            tenant_id=study.tenant_id,
            version=version,
            params=params.model_dump(exclude_none=True),
            priority=Priority(plan.priority),
            queue=pick_queue(version, None),
            images=images,
        )
        session.add(job)
        destinations = session.scalars(
            select(DicomDestination).where(
                DicomDestination.tenant_id == study.tenant_id,
                DicomDestination.id.in_([uuid.UUID(d) for d in plan.destination_ids]),
            )
        ).all()
        session.flush()
        enqueue_deliveries(session, job=job, destinations=destinations)
        study.status, study.job_id, study.rule_id = StudyStatus.ROUTED, job.id, plan.rule_id
        study.reidentify = reid
        if len(chosen) > len(images):
            study.reason = f"{len(chosen) - len(images)} instances left out (limit or no pixels)"
        record_sync(
            session,
            action="job.create",
            resource_type="job",
            resource_id=str(job.id),
            tenant_id=study.tenant_id,
            detail={"model": version.ref, "images": len(images), "source": study.source},
        )
        return job.queue, Priority(job.priority)

    def _plan(
        self, session: Session, study: DicomStudy, info: Any
    ) -> tuple[Plan | None, list[Any]]:
        explicit = study.requested.get("model")
        if explicit:
            plan = Plan(
                explicit,
                study.requested.get("params", {}),
                study.requested.get("priority", "routine"),
                study.requested.get("destination_ids", []),
                None,
            )
            return plan, info.series
        rows = tenant_rules(session, study.tenant_id)
        decision = route(info, [Rule(r.id, r.name, r.match) for r in rows])
        if decision is None:
            return None, []
        row = next(r for r in rows if r.id == decision.rule.id)
        destinations = list(row.destination_ids) + study.requested.get("destination_ids", [])
        return Plan(row.model_ref, row.params, row.priority, destinations, row.id), decision.series

    def _store_images(self, paths: list[Path]) -> tuple[list[StoredImage], dict[str, Any]]:
        salt = self.settings.uid_salt()
        images: list[StoredImage] = []
        reid: dict[str, Any] = {}
        for index, path in enumerate(paths):
            data = path.read_bytes()
            try:
                probe_image(data, max_pixels=self.settings.max_image_pixels)
            except AppError as exc:
                log.info("instance %s left out: %s", path.name, exc.detail)
                continue
            burned_in = False
            if self.settings.deidentify_uploads:
                policy = self.settings.deidentify_burned_in
                try:
                    result = deidentify(data, uid_salt=salt, burned_in_policy=policy)
                except AppError as exc:  # burned-in annotation under policy `refuse`
                    log.info("instance %s left out: %s", path.name, exc.detail)
                    continue
                capture(pydicom.dcmread(BytesIO(data), stop_before_pixels=True), salt, reid)
                data, burned_in = result.data, result.burned_in and policy == "flag"
            key, digest = self.store.put(data, prefix="images", suffix=".dcm")
            images.append(
                StoredImage(
                    filename=f"instance-{index:04d}.dcm",
                    content_type="application/dicom",
                    format="dicom",
                    size_bytes=len(data),
                    sha256=digest,
                    storage_key=key,
                    burned_in_annotation=burned_in,
                )
            )
        return images, reid
