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


class Forbidden(AppError):
    type = "forbidden"
    title = "Not allowed for this API key"
    status = 403


class RateLimited(AppError):
    type = "rate-limited"
    title = "Too many requests"
    status = 429


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
