"""Group spooled instances into studies; a study is complete after a quiet period.

Layout under the spool folder (state lives on disk, so a restart loses nothing):
  incoming/<ae>/<uuid>.dcm          written by the listener
  studies/<ae>/<study-key>/*.dcm    grouped by StudyInstanceUID while it is still arriving
  ready/<intake-id>/*.dcm + meta    complete: handed to gateway.intake, removed when done
The intake id becomes the `dicom_study` row's id, so re-processing after a crash is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pydicom

from gateway import metrics

log = logging.getLogger(__name__)
META = "intake.json"


class Spool:
    def __init__(self, root: Path, quiet_seconds: float) -> None:
        self.root = root
        self.quiet = quiet_seconds
        self.incoming, self.studies, self.ready = (
            root / "incoming",
            root / "studies",
            root / "ready",
        )
        for folder in (self.incoming, self.studies, self.ready):
            folder.mkdir(parents=True, exist_ok=True)

    def group_incoming(self) -> None:
        """Move each received file into its study's folder (by StudyInstanceUID)."""
        for path in self.incoming.glob("*/*.dcm"):
            ae = path.parent.name
            try:
                ds = pydicom.dcmread(
                    path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]
                )
                study_uid = str(ds.StudyInstanceUID)
            except Exception as exc:  # not DICOM or no study UID: nothing can route it
                log.warning("dropping an unreadable instance from %s: %s", ae, exc)
                path.unlink(missing_ok=True)
                continue
            key = hashlib.sha256(study_uid.encode()).hexdigest()[:32]
            folder = self.studies / ae / key
            if not folder.exists():
                folder.mkdir(parents=True)
                (folder / META).write_text(json.dumps({"source": "dimse", "calling_ae": ae}))
            os.replace(path, folder / path.name)
            os.utime(folder)  # the folder's mtime is the study's last arrival

    def close_quiet(self) -> None:
        """Studies with no arrival for `quiet` seconds move to ready/ under a new intake id."""
        now, open_count = time.time(), 0
        for folder in self.studies.glob("*/*"):
            if now - folder.stat().st_mtime >= self.quiet:
                os.replace(folder, self.ready / uuid.uuid4().hex)
            else:
                open_count += 1
        metrics.OPEN_STUDIES.set(open_count)

    def new_ready(self, intake_id: uuid.UUID, meta: dict[str, object]) -> Path:
        """A ready folder filled by someone else (a DICOMweb pull), meta written first."""
        folder = self.ready / intake_id.hex
        folder.mkdir(parents=True, exist_ok=True)
        (folder / META).write_text(json.dumps(meta))
        return folder

    def process_ready(
        self, handle: Callable[[uuid.UUID, dict[str, object], list[Path]], None]
    ) -> None:
        for folder in sorted(self.ready.iterdir()):
            meta_path = folder / META
            if not meta_path.exists():
                continue
            meta = json.loads(meta_path.read_text())
            if meta.get("filling"):
                continue  # a pull still writing into it
            files = sorted(folder.glob("*.dcm"))
            handle(uuid.UUID(folder.name), meta, files)
            shutil.rmtree(folder, ignore_errors=True)
