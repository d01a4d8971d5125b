"""A real Orthanc (Debian `orthanc` + `orthanc-dicomweb`) for the session, never the service.

Started as `Orthanc <configdir>` on free loopback ports with its own storage folder, the
DicomWeb plugin on, and the platform's listener as the DicomModality `medimg`. Restartable
on the same ports and storage (delivery-retry tests stop it mid-delivery).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack, free_port

PACKAGES = "orthanc orthanc-dicomweb"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AE_TITLE = "ORTHANC"


def ensure_installed() -> None:
    """Install the Debian packages when missing and root; otherwise fail naming them."""
    if shutil.which("Orthanc") and PLUGIN.exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        # /usr/sbin/policy-rc.d (exit 101) keeps the package from starting the system service.
        subprocess.run(["apt-get", "install", "-y", *PACKAGES.split()], check=False)
    if not (shutil.which("Orthanc") and PLUGIN.exists()):
        pytest.fail(f"Orthanc is needed: install the Debian packages `{PACKAGES}`")


@dataclass
class Orthanc:
    root: Path
    dicom_port: int
    http_port: int
    listener_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    def start(self, attempts: int = 15) -> None:
        """Start (or restart) on the same ports; retried while a port is still taken.

        After a stop, the freed DICOM port can be held for a while by another socket (a
        client's ephemeral port, TIME_WAIT); Orthanc then exits at once, so wait and retry.
        """
        for attempt in range(attempts):
            try:
                self._start_once()
                return
            except RuntimeError as exc:
                if "already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(2)

    def _start_once(self) -> None:
        config = self.root / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "orthanc.json").write_text(
            json.dumps(
                {
                    "Name": "medimg-test",
                    "DicomAet": AE_TITLE,
                    "HttpPort": self.http_port,
                    "DicomPort": self.dicom_port,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "StorageDirectory": str(self.root / "storage"),
                    "IndexDirectory": str(self.root / "storage"),
                    "Plugins": [str(PLUGIN)],
                    "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                    "DicomModalities": {"medimg": ["MEDIMG", "127.0.0.1", self.listener_port]},
                    "StableAge": 1,
                    "DicomScpTimeout": 10,
                }
            )
        )
        log = (self.root / "orthanc.log").open("ab")
        self.proc = subprocess.Popen(
            ["Orthanc", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}"
                )
            try:
                if httpx.get(self.url + "/system", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("Orthanc did not answer /system in 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def orthanc(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    ensure_installed()
    assert stack.config.dicom_port, "the test stack runs the DICOM gateway"
    server = Orthanc(
        tmp_path_factory.mktemp("orthanc"), free_port(), free_port(), stack.config.dicom_port
    )
    server.start()
    yield server
    server.stop()
