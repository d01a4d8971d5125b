"""Pull requests (POST /v1/dicom/pulls): QIDO-RS + WADO-RS into the spool, then intake."""

from __future__ import annotations

import logging
import shutil
import uuid
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from gateway import metrics
from gateway.intake import Intake, tenant_rules
from gateway.settings import GatewaySettings
from gateway.spool import Spool
from shared.db.base import utcnow
from shared.db.dicom_models import DicomStudy, PacsEndpoint, StudySource, StudyStatus
from shared.dicom_routing import Rule
from shared.dicomweb import client_for
from shared.dicomweb_pull import pull_study

log = logging.getLogger(__name__)
# A pull claimed longer ago than this was lost with its gateway: claim it again.
STALE_PULL = timedelta(minutes=15)


class Pulls:
    def __init__(
        self,
        *,
        sessionmaker: sessionmaker[Session],
        settings: GatewaySettings,
        spool: Spool,
        intake: Intake,
    ) -> None:
        self.sessionmaker, self.settings, self.spool, self.intake = (
            sessionmaker,
            settings,
            spool,
            intake,
        )

    def _claim(self, session: Session) -> uuid.UUID | None:
        due = (
            select(DicomStudy.id)
            .where(
                DicomStudy.source == StudySource.DICOMWEB,
                or_(
                    DicomStudy.status == StudyStatus.PENDING,
                    (DicomStudy.status == StudyStatus.PULLING)
                    & (DicomStudy.updated_at < utcnow() - STALE_PULL),
                ),
            )
            .order_by(DicomStudy.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        study_id = session.scalar(
            update(DicomStudy)
            .where(DicomStudy.id.in_(due.scalar_subquery()))
            .values(status=StudyStatus.PULLING, updated_at=utcnow())
            .returning(DicomStudy.id)
        )
        session.commit()
        return study_id

    def run_once(self) -> bool:
        with self.sessionmaker() as session:
            study_id = self._claim(session)
            if study_id is None:
                return False
            study = session.get(DicomStudy, study_id)
            assert study is not None
            endpoint = session.get(PacsEndpoint, study.pacs_id)
            explicit = bool(study.requested.get("model"))
            rules = (
                None
                if explicit
                else [Rule(r.id, r.name, r.match) for r in tenant_rules(session, study.tenant_id)]
            )
            meta = {"source": StudySource.DICOMWEB.value, "filling": True}
            folder = self.spool.new_ready(study.id, meta)
            try:
                if endpoint is None:
                    raise RuntimeError("the PACS endpoint was deleted")
                count = pull_study(
                    client_for(endpoint),
                    study_uid=study.study_instance_uid,
                    folder=folder,
                    rules=rules,
                    requested_series=study.requested.get("series_instance_uids"),
                    max_instances=self.settings.max_files_per_job,
                )
            except Exception as exc:  # PACS down, refused, bad answer: recorded on the study
                log.warning("pull of study %s failed: %s", study.id, exc)
                study.status, study.error_type = StudyStatus.FAILED, "pull-failed"
                study.reason = f"{type(exc).__name__}: {exc}"[:500]
                study.updated_at = utcnow()
                session.commit()
                metrics.STUDIES.labels("dicomweb", "failed").inc()
                return True
            log.info("pulled %d instances for study %s", count, study.id)
        # The folder keeps "filling": the spool thread never races this thread for it.
        self.intake.handle(study_id, {"source": "dicomweb"}, sorted(folder.glob("*.dcm")))
        shutil.rmtree(folder, ignore_errors=True)
        return True
