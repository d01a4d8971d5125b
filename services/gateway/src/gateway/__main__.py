"""`python -m gateway`: the DICOM node (listener, study intake, pulls, result delivery)."""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from gateway import metrics
from gateway.deliveries import Deliveries
from gateway.intake import Intake
from gateway.listener import Listener, ae_folder
from gateway.pulls import Pulls
from gateway.settings import GatewaySettings, get_gateway_settings
from gateway.spool import Spool
from shared.db.base import utcnow
from shared.db.dicom_models import DicomCallingAe, DicomStudy, StudyStatus
from shared.db.session import make_engine, make_sessionmaker
from shared.logs import configure_logging
from shared.queueing import make_celery
from shared.storage import BlobStore

log = logging.getLogger("gateway")


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.require_database_url(), pool_size=6)
        self.sessionmaker: sessionmaker[Session] = make_sessionmaker(self.engine)
        store = BlobStore(settings.store_path)
        celery = make_celery("gateway", settings.require_redis_url())
        self.spool = Spool(settings.spool_path, settings.dicom_study_quiet_seconds)
        self.listener = Listener(
            ae_title=settings.dicom_ae_title,
            bind=settings.dicom_bind,
            port=settings.dicom_port,
            incoming=self.spool.incoming,
        )
        self.intake = Intake(
            sessionmaker=self.sessionmaker, settings=settings, store=store, celery=celery
        )
        self.pulls = Pulls(
            sessionmaker=self.sessionmaker, settings=settings, spool=self.spool, intake=self.intake
        )
        self.deliveries = Deliveries(sessionmaker=self.sessionmaker, settings=settings, store=store)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        # AE titles by folder name: the spool knows callers by their folder only.
        self.ae_by_folder: dict[str, str] = {}

    def refresh_allowed(self) -> None:
        with self.sessionmaker() as session:
            titles = list(session.scalars(select(DicomCallingAe.ae_title)).all())
        self.listener.allow(titles)
        self.ae_by_folder = {ae_folder(t): t for t in titles}

    def _spool_step(self) -> None:
        self.spool.group_incoming()
        self.spool.close_quiet()

        def handle(intake_id: uuid.UUID, meta: dict[str, Any], files: list[Path]) -> None:
            folder = str(meta.get("calling_ae"))
            meta["calling_ae"] = self.ae_by_folder.get(folder, folder)
            self.intake.handle(intake_id, meta, files)

        self.spool.process_ready(handle)

    def _housekeeping(self) -> None:
        """Unmatched studies, and re-identification data, go after the retention period."""
        cutoff = utcnow() - timedelta(hours=self.settings.dicom_retention_hours)
        with self.sessionmaker() as session:
            session.execute(
                delete(DicomStudy).where(
                    DicomStudy.status == StudyStatus.UNMATCHED, DicomStudy.created_at < cutoff
                )
            )
            session.execute(
                update(DicomStudy)
                .where(DicomStudy.reidentify.is_not(None), DicomStudy.created_at < cutoff)
                .values(reidentify=None)
            )
            session.commit()

    def _loop(self, name: str, step: Callable[[], object], every: float) -> None:
        def run() -> None:
            while not self.stopping.is_set():
                try:
                    busy = step()
                except Exception:  # database or PACS hiccup: log, wait, go on
                    log.exception("%s step failed", name)
                    busy = False
                if not busy:
                    self.stopping.wait(every)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def health(self) -> dict[str, str]:
        checks = {"listener": "ok" if self.listener.running else "not listening"}
        checks["loops"] = "ok" if all(t.is_alive() for t in self.threads) else "a loop died"
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"{type(exc).__name__}"
        return checks

    def start(self) -> None:
        self.refresh_allowed()
        self.listener.start()
        poll = self.settings.dicom_poll_seconds
        self._loop("allowed-aes", lambda: self.refresh_allowed(), 2.0)
        self._loop("spool", self._spool_step, poll)
        self._loop("pulls", self.pulls.run_once, poll)
        self._loop("deliveries", self.deliveries.run_once, poll)
        self._loop("housekeeping", self._housekeeping, 600.0)
        if self.settings.gateway_http_port:
            metrics.serve(self.settings.dicom_bind, self.settings.gateway_http_port, self.health)
        log.info(
            "DICOM listener %s on %s:%d",
            self.settings.dicom_ae_title,
            self.settings.dicom_bind,
            self.settings.dicom_port,
        )

    def stop(self) -> None:
        self.stopping.set()
        self.listener.stop()
        for thread in self.threads:
            thread.join(timeout=30)
        self.engine.dispose()


def main() -> None:
    settings = get_gateway_settings()
    configure_logging(settings.log_level, json_logs=settings.json_logs)
    gateway = Gateway(settings)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    gateway.start()
    while not done.wait(1.0):
        pass
    gateway.stop()


if __name__ == "__main__":
    main()
