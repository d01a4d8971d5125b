"""A small real FHIR receiver for tests: HTTP(S) on loopback, transactions of PUTs only.

No FHIR server (HAPI, Firely) is installable on the build machine, so this stands in for
one. It validates every transaction against HL7's R4 JSON schema (tests/fhir_schema.py),
answers 400 with an OperationOutcome when invalid, stores what the PUTs name (201 when new,
200 when updated, as a FHIR server does) and serves `GET <base>/<Type>/<id>`. Modes make it
misbehave the ways a real server can: down (503), a redirect, a failed entry.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fhir_schema import schema_errors

FHIR_JSON = "application/fhir+json"


@dataclass
class FhirServer:
    url: str = ""
    fail_next: int = 0  # answer this many transactions 503 first (server "down")
    redirect_to: str | None = None  # answer transactions 307 to this URL
    fail_entry: bool = False  # answer a transaction-response whose last entry failed
    posts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[list[str]] = field(default_factory=list)
    statuses: list[list[str]] = field(default_factory=list)  # entry statuses answered
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    headers: list[dict[str, str]] = field(default_factory=list)


def outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }


def _handler(state: FhirServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any], **headers: str) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", FHIR_JSON)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            bundle = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.posts.append(bundle)
            state.headers.append(dict(self.headers))
            if state.fail_next > 0:
                state.fail_next -= 1
                self._send(503, outcome("down for maintenance"))
                return
            if state.redirect_to:
                self._send(307, outcome("moved"), Location=state.redirect_to)
                return
            errors = schema_errors(bundle)
            if bundle.get("type") != "transaction":
                errors.append(f"Bundle.type is {bundle.get('type')!r}")
            if any(e.get("request", {}).get("method") != "PUT" for e in bundle.get("entry", [])):
                errors.append("this server takes PUT entries only")
            state.errors.append(errors)
            if errors:
                self._send(400, outcome("; ".join(errors)[:500]))
                return
            statuses = []
            for entry in bundle["entry"]:
                created = entry["request"]["url"] not in state.resources
                state.resources[entry["request"]["url"]] = entry["resource"]
                statuses.append("201 Created" if created else "200 OK")
            if state.fail_entry:
                statuses[-1] = "422 Unprocessable Entity"
            state.statuses.append(statuses)
            self._send(200, {"resourceType": "Bundle", "type": "transaction-response",
                             "entry": [{"response": {"status": s}} for s in statuses]})  # fmt: skip

        def do_GET(self) -> None:
            key = self.path.removeprefix("/fhir/")
            if key in state.resources:
                self._send(200, state.resources[key])
            else:
                self._send(404, outcome(f"{key} not found"))

    return Handler


@contextmanager
def serve(tls_dir: Path | None = None) -> Iterator[FhirServer]:
    """Run a receiver at http://127.0.0.1:<port>/fhir, or https with a self-signed
    certificate made in `tls_dir` (openssl, Debian package `openssl`)."""
    state = FhirServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    scheme = "http"
    if tls_dir is not None:
        cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/fhir"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
