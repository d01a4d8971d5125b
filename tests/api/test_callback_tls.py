"""Callback delivery over TLS to a local HTTPS receiver signed by a test CA (issue 11 item 7).

The delivery code path of the API (`api.callback_delivery.send` with the client the
delivery loop builds) posts to the checked address while verifying the certificate
against the URL's host (SNI): trusted through MEDIMG_CALLBACK_CA_FILE, refused without
it, refused for a certificate of another name. The CA and certificates are made with the
openssl command line at test time (no key material is committed).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from api.callback_delivery import Claimed, Outcome, make_client, send
from shared.callbacks import CallbackPolicy
from shared.config import Settings

HOST = "127.0.0.2"  # an allow-listed loopback address (Linux routes all of 127/8)
SECRET = "tls-test-callback-secret-0123456789abcdef"


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise AssertionError("the openssl command is missing: install the Debian package openssl")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _leaf(folder: Path, name: str, san: str) -> tuple[Path, Path]:
    """A server certificate for ``san`` signed by the CA in ``folder``."""
    (folder / f"{name}.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-out", f"{name}.pem",
             "-extfile", f"{name}.ext", cwd=folder)  # fmt: skip
    return folder / f"{name}.pem", folder / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "1", "-subj", "/CN=medimg test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    right, right_key = _leaf(folder, "receiver", f"IP:{HOST}")
    wrong, wrong_key = _leaf(folder, "other", "IP:127.0.0.3,DNS:other.test")
    return {"ca": folder / "ca.pem", "right": right, "right_key": right_key,
            "wrong": wrong, "wrong_key": wrong_key}  # fmt: skip


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append({"headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _serve(cert: Path, key: Path) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer((HOST, 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(pki: dict[str, Path]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    yield from _serve(pki["right"], pki["right_key"])


@pytest.fixture
def impostor(pki: dict[str, Path]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    yield from _serve(pki["wrong"], pki["wrong_key"])


def _deliver(port: int, ca_file: Path | None) -> tuple[Outcome, Claimed]:
    settings = Settings(
        callback_allowed_hosts=[HOST],
        callback_secret=SECRET,  # type: ignore[arg-type]
        callback_ca_file=ca_file,
        callback_timeout_seconds=5,
    )
    job_id = uuid.uuid4()
    item = Claimed(
        id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        owner_id=job_id,
        url=f"https://{HOST}:{port}/hooks/medimg",
        payload={"event": "job.finished", "id": str(job_id), "status": "succeeded"},
        attempts=1,
    )

    async def attempt() -> Outcome:
        async with make_client(settings) as client:
            return await send(client, item, CallbackPolicy.from_settings(settings), settings)

    return asyncio.run(attempt()), item


def test_https_receiver_signed_by_the_configured_ca_gets_the_callback(
    pki: dict[str, Path], receiver: tuple[int, list[dict[str, Any]]]
) -> None:
    port, received = receiver
    outcome, item = _deliver(port, pki["ca"])
    assert outcome == Outcome(), outcome
    assert len(received) == 1
    assert received[0]["body"]["id"] == item.payload["id"]
    assert received[0]["headers"]["Host"] == f"{HOST}:{port}"
    assert received[0]["headers"]["X-Medimg-Signature"].startswith("v1=")


def test_untrusted_ca_is_refused_and_retried(
    receiver: tuple[int, list[dict[str, Any]]],
) -> None:
    port, received = receiver
    outcome, _ = _deliver(port, None)  # public CAs only: the test CA is unknown
    assert outcome.error and "CERTIFICATE_VERIFY_FAILED" in outcome.error, outcome
    assert not outcome.permanent and received == []


def test_certificate_for_another_name_is_refused(
    pki: dict[str, Path], impostor: tuple[int, list[dict[str, Any]]]
) -> None:
    port, received = impostor
    outcome, _ = _deliver(port, pki["ca"])
    assert outcome.error and "CERTIFICATE_VERIFY_FAILED" in outcome.error, outcome
    assert received == []
