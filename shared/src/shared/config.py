"""Settings shared by every medimg process, read from the environment.

`DATABASE_URL` and `REDIS_URL` point at real servers; when they are unset the
launcher (`medimg run`) starts embedded PostgreSQL and Valkey under `MEDIMG_DATA_DIR`
and passes their URLs down to the processes it starts.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[3]
MIN_SECRET_LENGTH = 16


def psycopg_url(url: str) -> str:
    """One driver (psycopg 3) for the async API, the sync workers and Alembic."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIMG_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "MEDIMG_DATABASE_URL")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "MEDIMG_REDIS_URL")
    )
    # Root of everything the embedded default writes: postgres/, valkey/, store/.
    data_dir: Path = Path("var")
    # Blob store for uploaded images, model weights and artifacts. Point several hosts at
    # one shared mount (NFS, RWX volume) to scale out.
    store_dir: Path | None = None
    # Model packages registered on start-up (see models/README.md).
    bundled_models_dir: Path = REPO_ROOT / "models"

    # Upload limits: a PACS bridge sending a whole study fits; a runaway client does not.
    max_files_per_job: int = 64
    max_file_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    # Whole request body; a CT series of a few hundred slices fits, a runaway upload does not.
    max_request_bytes: int = 512 * 1024 * 1024
    # Model uploads (POST /v1/models): the weights file, also once unpacked from a package.
    max_model_bytes: int = 500 * 1024 * 1024

    # Dataset zips (shared.datasets.safezip): checked from the central directory at upload and
    # again while streaming each member, since declared sizes can lie.
    zip_max_members: int = 100_000
    zip_max_total_bytes: int = 8 * 1024 * 1024 * 1024
    # Compression ratio of a member (and of the whole archive) beyond which it is a bomb;
    # only checked above zip_ratio_min_bytes, where small text files may compress well.
    zip_max_ratio: int = 100
    zip_ratio_min_bytes: int = 1024 * 1024

    log_level: str = "INFO"
    # JSON lines for log shippers; MEDIMG_JSON_LOGS=false gives plain text for a terminal.
    json_logs: bool = True
    # Port of a worker's Prometheus endpoint (merged over its prefork children); unset: off.
    worker_metrics_port: int | None = None

    # Per API key; a key's own rate_limit_per_minute overrides it. 0 turns limiting off.
    rate_limit_per_minute: int = 1200
    # Per tenant (shared.job_quota): inference jobs queued or running at once, and of those
    # `stat` ones; a tenant's own limits override these. 0 turns a quota off.
    tenant_max_active_jobs: int = 10_000
    tenant_max_active_stat_jobs: int = 100
    # Failed authentications per client address (api.authn_gate): a token bucket of this
    # size, refilled at this rate; beyond it 429 without a database look-up. 0 turns it off.
    auth_failure_burst: int = 20
    auth_failure_per_minute: float = 30.0
    # A valid key's row is reused this long; revocations reach every API process at once
    # (PostgreSQL NOTIFY), expiry is checked on every request. 0: no caching.
    api_key_cache_seconds: float = 10.0
    # Per-route request body limits (api.limits); other routes get max_request_bytes.
    max_dataset_request_bytes: int = 2 * 1024 * 1024 * 1024
    max_model_request_bytes: int = 520 * 1024 * 1024
    max_json_request_bytes: int = 8 * 1024 * 1024
    # Bearer token /metrics requires when set (Prometheus `authorization` in scrape configs).
    metrics_token: SecretStr | None = None
    # Strict-Transport-Security max-age, sent only on requests that arrived over TLS (scheme
    # https, or X-Forwarded-Proto from a proxy uvicorn trusts: FORWARDED_ALLOW_IPS).
    hsts_max_age_seconds: int = 63_072_000

    # The hardware class the training queue runs on: training recipes derive input size and
    # batch size from it when a job leaves them unset (fixed when the job is accepted).
    trainer_hardware: Literal["cpu", "cuda"] = "cpu"

    # Worker tuning (see PERF_BASELINES.md: few threads per process, batch on CPU).
    torch_threads: int | None = None
    max_batch_size: int = 8
    # Micro-batching: a job with fewer images than max_batch_size also takes queued jobs of
    # the same model version, waiting at most this long for more to arrive (0: no wait).
    max_batch_wait_ms: float = 5.0
    # Off: each job runs alone (bench/ compares both; a switch for debugging latency).
    cross_job_batching: bool = True

    # Delivery (see docs/reliability.md). A worker holds a claimed job for job_lease_seconds,
    # renewed after every batch; past it, another worker may take the job over.
    job_lease_seconds: int = 120
    # Claims of one job (first run + redeliveries) before it fails as `attempts-exceeded`.
    max_attempts: int = 3
    # The learning-loop scheduler (api.learning, issue 17): one leader per pass, like the
    # reconciler; it fires retraining policies and stages and gates finished challengers.
    learning_interval_seconds: float = 30
    # The reconciler (in the API) re-sends jobs the broker lost and fails expired ones.
    reconcile_interval_seconds: float = 30
    # A queued job younger than this is left alone: its message may still be in flight.
    reconcile_grace_seconds: float = 60
    # Per task type: the soft limit fails the job as `time-limit`; the hard limit kills the
    # process if the task ignores the soft one. Both stay under the broker's visibility timeout.
    infer_soft_time_limit: float = 900
    infer_hard_time_limit: float = 960
    import_soft_time_limit: float = 1800
    import_hard_time_limit: float = 1860

    # Job-completion callbacks (shared.callbacks, docs/security.md). Hostnames, `*.domain`
    # wildcards or IPs/CIDRs, comma-separated; empty turns callbacks off. Resolved addresses
    # must be public unless inside an allow-listed CIDR.
    callback_allowed_hosts: Annotated[list[str], NoDecode] = []
    callback_allow_http: bool = False  # plain http only for tests and closed networks
    # Never delivered to, even when public: e.g. the cluster's service and pod ranges.
    callback_blocked_cidrs: Annotated[list[str], NoDecode] = []
    callback_secret: SecretStr | None = None  # HMAC-SHA256 key of X-Medimg-Signature
    callback_timeout_seconds: float = 5.0
    callback_max_attempts: int = 8
    callback_backoff_seconds: float = 5.0  # doubled per attempt, with jitter
    callback_backoff_max_seconds: float = 900.0
    callback_poll_seconds: float = 1.0
    # PEM file of CAs trusted for https callbacks besides the public ones (certifi): e.g.
    # a hospital's internal CA. Proxy and SSL_* environment settings are never used.
    callback_ca_file: Path | None = None
    # Prefix of the `result_url` in callback bodies (e.g. https://medimg.example.org);
    # unset: the body carries the path only.
    public_url: str | None = None

    # Replayable responses of Idempotency-Key requests are deleted after this.
    idempotency_ttl_hours: float = 24.0
    idempotency_cleanup_seconds: float = 600.0
    # Blob deletion (shared.deletion): a blob written or re-used less than this long ago may
    # belong to a row not committed yet, so deletions leave it to the orphan sweep, which
    # removes blobs no row references once they are older than this.
    blob_grace_seconds: float = 3600.0
    orphan_sweep_seconds: float = 3600.0

    # DICOMweb PACS endpoints (shared.dicomweb_policy): hostnames, `*.domain` or IPs/CIDRs a
    # tenant may register, comma-separated; empty: none. Private addresses are fine (a PACS
    # lives on the hospital network); plain http only when allowed.
    dicomweb_allowed_hosts: Annotated[list[str], NoDecode] = []
    dicomweb_allow_http: bool = False
    # FHIR servers results are posted to (destinations of kind `fhir`, shared.fhir_results):
    # same forms and rules as the DICOMweb list; empty: none may be registered.
    fhir_allowed_hosts: Annotated[list[str], NoDecode] = []
    fhir_allow_http: bool = False

    # Uploaded DICOM is de-identified (PS3.15 basic profile) before it is stored.
    deidentify_uploads: bool = True
    # Mixed into replacement UIDs (2.25.<hash>): set it so original UIDs cannot be guessed back.
    deidentify_uid_salt: SecretStr = SecretStr("")
    # DICOM declaring BurnedInAnnotation = YES (text in the pixels, which de-identification
    # cannot remove): refuse (422 at upload, a per-file problem in a dataset import), flag
    # (stored, `burned_in_annotation: true` on the job image / dataset item) or allow.
    deidentify_burned_in: Literal["refuse", "flag", "allow"] = "flag"

    @field_validator(
        "callback_allowed_hosts",
        "callback_blocked_cidrs",
        "dicomweb_allowed_hosts",
        "fhir_allowed_hosts",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _callbacks_need_a_secret(self) -> Settings:
        secret = self.callback_secret.get_secret_value() if self.callback_secret else ""
        if self.callback_allowed_hosts and len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                "MEDIMG_CALLBACK_ALLOWED_HOSTS is set but MEDIMG_CALLBACK_SECRET is missing or "
                f"shorter than {MIN_SECRET_LENGTH} characters: callbacks must be signed with a "
                "real key (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        return self

    def uid_salt(self) -> bytes:
        """The de-identification UID salt; on a single host without one, a persisted random one.

        An empty salt would make replacement UIDs plain hashes of the originals, which can be
        guessed back. Several hosts must share the value: set MEDIMG_DEIDENTIFY_UID_SALT.
        """
        configured = self.deidentify_uid_salt.get_secret_value()
        if configured:
            return configured.encode()
        path = self.data_dir / "secrets" / "deidentify-uid-salt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            try:
                with os.fdopen(os.open(path, flags, 0o600), "w") as f:
                    f.write(secrets.token_hex(32))
            except FileExistsError:  # another process created it first
                pass
        return path.read_text().strip().encode()

    @field_validator("database_url")
    @classmethod
    def _use_psycopg3(cls, url: str | None) -> str | None:
        return psycopg_url(url) if url else url

    @property
    def store_path(self) -> Path:
        return (self.store_dir or self.data_dir / "store").resolve()

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "DATABASE_URL is not set: start the platform with `make run` (embedded "
                "PostgreSQL) or point DATABASE_URL at a PostgreSQL server"
            )
        return self.database_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError(
                "REDIS_URL is not set: start the platform with `make run` (embedded Valkey) "
                "or point REDIS_URL at a Redis-compatible server"
            )
        return self.redis_url


@lru_cache
def get_settings() -> Settings:
    return Settings()
