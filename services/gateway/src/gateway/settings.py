"""Settings of the DICOM gateway only (the shared ones come from shared.config)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from shared.config import Settings


class GatewaySettings(Settings):
    # The DICOM node a PACS routes to: port and AE title of the C-STORE/C-ECHO SCP.
    dicom_port: int = 11112
    dicom_ae_title: str = "MEDIMG"
    dicom_bind: str = "0.0.0.0"  # noqa: S104 (a DICOM node listens on the hospital network)
    # A study is complete when no instance of it arrived for this long.
    dicom_study_quiet_seconds: float = 10.0
    # Received instances wait here (unset: <data_dir>/dicom-spool); never inside the store.
    dicom_spool_dir: Path | None = None
    # Unmatched studies (and re-identification data) are deleted after this.
    dicom_retention_hours: float = 72.0
    dicom_poll_seconds: float = 0.5
    # Result deliveries (STOW-RS / C-STORE): attempts and backoff (doubled, with jitter).
    dicom_delivery_max_attempts: int = 10
    dicom_delivery_backoff_seconds: float = 5.0
    dicom_delivery_backoff_max_seconds: float = 900.0
    dicom_delivery_lease_seconds: float = 300.0
    # /metrics (Prometheus) and /healthz of the gateway; 0: off.
    gateway_http_port: int = 9102

    @property
    def spool_path(self) -> Path:
        return (self.dicom_spool_dir or self.data_dir / "dicom-spool").resolve()


@lru_cache
def get_gateway_settings() -> GatewaySettings:
    return GatewaySettings()
