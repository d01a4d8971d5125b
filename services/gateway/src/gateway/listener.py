"""The DICOM listener: a C-STORE and C-ECHO SCP (pynetdicom).

pynetdicom runs event handlers on the association's own thread (pynetdicom #801), so the
store handler only writes the encoded instance to the spool and answers 0x0000; grouping,
de-identification, routing and job creation happen on the spool's thread (gateway.spool).
Only calling AE titles registered for a tenant may associate (`require_calling_aet`,
refreshed from the database), and the called AE title must be ours.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from gateway import metrics
from shared.schemas.dicom import AE_TITLE_PATTERN

log = logging.getLogger(__name__)
# Placeholder when no AE is registered: an empty list would let every caller in.
NOBODY = "-NOBODY-"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def ae_folder(ae_title: str) -> str:
    """A file-system-safe folder name for an AE title (titles may hold spaces)."""
    return _UNSAFE.sub("_", ae_title.strip()) or "_"


class Listener:
    def __init__(self, *, ae_title: str, bind: str, port: int, incoming: Path) -> None:
        self.incoming = incoming
        self.ae = AE(ae_title=ae_title)
        self.ae.require_called_aet = True
        self.ae.require_calling_aet = [NOBODY]
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(Verification)
        self.ae.maximum_pdu_size = 0  # no limit on what we receive
        self.address = (bind, port)
        self.server: ThreadedAssociationServer | None = None

    def allow(self, ae_titles: list[str]) -> None:
        """Set the calling AE titles allowed to associate (effective for new associations)."""
        # A title pynetdicom refuses (stored before validation was strict) must not stop every
        # other PACS from associating: drop it here, the API refuses new ones with a 422.
        valid = [t for t in ae_titles if re.fullmatch(AE_TITLE_PATTERN, t)]
        if len(valid) < len(ae_titles):
            log.warning("ignoring %d invalid calling AE title(s)", len(ae_titles) - len(valid))
        self.ae.require_calling_aet = sorted(valid) or [NOBODY]

    def start(self) -> None:
        self.incoming.mkdir(parents=True, exist_ok=True)
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_ACCEPTED, lambda event: metrics.ASSOCIATIONS.labels("accepted").inc()),
            (evt.EVT_REJECTED, lambda event: metrics.ASSOCIATIONS.labels("rejected").inc()),
        ]
        self.server = self.ae.start_server(self.address, block=False, evt_handlers=handlers)

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.socket is not None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_store(self, event: evt.Event) -> int:
        """Write the instance as a Part 10 file (tmp + rename: the spool sees whole files)."""
        calling = event.assoc.requestor.ae_title
        folder = self.incoming / ae_folder(calling)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            name = uuid.uuid4().hex
            tmp = folder / f".{name}.part"
            with tmp.open("wb") as fh:
                fh.write(event.encoded_dataset(include_meta=True))
            os.replace(tmp, folder / f"{name}.dcm")
        except OSError as exc:
            log.error("cannot spool a C-STORE from %s: %s", calling, exc)
            return 0xA700  # Out of Resources: the sender keeps the instance and may retry
        metrics.INSTANCES.inc()
        return 0x0000
