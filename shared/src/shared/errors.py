"""One error vocabulary for HTTP problems (RFC 9457) and failed jobs.

Each error has a stable `type` slug. The API renders it as
`application/problem+json`; a failed job or image stores the same slug, so polling
clients see the same words either way.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://medimg.dev/problems/"


class AppError(Exception):
    type: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    status: ClassVar[int] = 500

    def __init__(
        self, detail: str, *, headers: dict[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


class NotFound(AppError):
    type = "not-found"
    title = "Resource not found"
    status = 404


class JobNotFound(NotFound):
    type = "job-not-found"
    title = "Job not found"


class ModelNotFound(NotFound):
    type = "model-not-found"
    title = "Model not found"


class Unauthorized(AppError):
    type = "unauthorized"
    title = "Authentication required"
    status = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="medimg"'})


class KeyExpired(Unauthorized):
    type = "key-expired"
    title = "API key expired"


class Forbidden(AppError):
    type = "forbidden"
    title = "Not allowed for this API key"
    status = 403


class RateLimited(AppError):
    type = "rate-limited"
    title = "Too many requests"
    status = 429


class QuotaExceeded(RateLimited):
    type = "quota-exceeded"
    title = "Tenant quota exceeded"


class InvalidRequest(AppError):
    type = "invalid-request"
    title = "Invalid request"
    status = 422


class Conflict(AppError):
    type = "conflict"
    title = "Conflict with the resource's current state"
    status = 409


class PayloadTooLarge(AppError):
    type = "payload-too-large"
    title = "Payload too large"
    status = 413


class UnsupportedImage(AppError):
    """The file is not an image format the platform reads."""

    type = "unsupported-image"
    title = "Unsupported image format"
    status = 415


class InvalidImage(AppError):
    """The file claims a supported format but cannot be decoded."""

    type = "invalid-image"
    title = "Image cannot be decoded"
    status = 422


class ImageTooLarge(AppError):
    type = "image-too-large"
    title = "Image has too many pixels"
    status = 413


class ModelUnavailable(AppError):
    """The model version exists but its weights cannot be loaded."""

    type = "model-unavailable"
    title = "Model cannot be loaded"
    status = 503


class ServiceUnavailable(AppError):
    type = "service-unavailable"
    title = "A backing service is unavailable"
    status = 503


class TimeLimitExceeded(AppError):
    """A job's task ran past its soft time limit (a job error, never an HTTP response)."""

    type = "time-limit"
    title = "Job exceeded its time limit"
    status = 500


class AttemptsExceeded(AppError):
    """A job was claimed more often than allowed: its workers kept dying or timing out."""

    type = "attempts-exceeded"
    title = "Job exceeded its delivery attempts"
    status = 500

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the job was started {limit} times and its worker stopped each time (crash, "
            "kill or time limit) before it finished; it will not be retried. Submit it "
            "again, or with fewer or smaller images."
        )


class DatasetNotFound(NotFound):
    type = "dataset-not-found"
    title = "Dataset not found"


class UnsupportedArchive(AppError):
    """A dataset upload that is not a zip archive."""

    type = "unsupported-archive"
    title = "Dataset uploads must be zip archives"
    status = 415


class InvalidArchive(AppError):
    """A zip whose structure is corrupt or that uses features the importer refuses."""

    type = "invalid-archive"
    title = "Zip archive cannot be read"
    status = 422


class UnsafeArchive(AppError):
    """Member paths or entries that could escape an extraction folder (traversal, links)."""

    type = "unsafe-archive"
    title = "Zip archive contains unsafe entries"
    status = 422


class ArchiveTooLarge(AppError):
    """Too many members, too many bytes once unpacked, or a compression ratio of a zip bomb."""

    type = "archive-too-large"
    title = "Zip archive exceeds the import limits"
    status = 413


class InvalidDataset(AppError):
    """The archive is safe but its content is not a usable dataset (listed in `errors`)."""

    type = "invalid-dataset"
    title = "Dataset content is invalid"
    status = 422


class InvalidModelCard(AppError):
    """The model card does not validate; `errors` lists each field path and problem."""

    type = "invalid-model-card"
    title = "Model card is invalid"
    status = 422


class InvalidModelPackage(AppError):
    """The weights do not fit the card (architecture, head, channels) or are no checkpoint."""

    type = "invalid-model-package"
    title = "Model package is invalid"
    status = 422


class UnsafeCheckpoint(InvalidModelPackage):
    """The checkpoint's pickle references code, which a weights-only checkpoint never does."""

    type = "unsafe-checkpoint"
    title = "Checkpoint references disallowed code"


class ChecksumMismatch(AppError):
    type = "checksum-mismatch"
    title = "Checksum does not match the upload"
    status = 422


class UnsupportedModelPackage(AppError):
    type = "unsupported-model-package"
    title = "Unsupported model package format"
    status = 415


class ModelTooLarge(AppError):
    type = "model-too-large"
    title = "Model package exceeds the size limit"
    status = 413
