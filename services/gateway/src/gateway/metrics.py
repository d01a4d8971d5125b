"""The gateway's Prometheus metrics and its /healthz probe, on one small HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

ASSOCIATIONS = Counter(
    "medimg_dicom_associations", "DICOM associations requested, by result", ["result"]
)
INSTANCES = Counter("medimg_dicom_instances_received", "Instances stored by C-STORE")
STUDIES = Counter("medimg_dicom_studies", "Studies taken in, by outcome", ["source", "outcome"])
DELIVERIES = Counter(
    "medimg_dicom_deliveries", "Result delivery attempts, by kind and outcome", ["kind", "outcome"]
)
OPEN_STUDIES = Gauge("medimg_dicom_open_studies", "Studies still receiving instances")

HealthCheck = Callable[[], dict[str, str]]


def serve(host: str, port: int, health: HealthCheck) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz (200 when every check says ``ok``, else 503) in a thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest())
            elif self.path in ("/healthz", "/readyz"):
                checks = health()
                ok = all(v == "ok" for v in checks.values())
                body = json.dumps({"status": "ok" if ok else "failing", "checks": checks})
                self._send(200 if ok else 503, "application/json", body.encode())
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes are not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="gateway-http", daemon=True).start()
    return server
