"""HMAC-SHA256 signatures of callback bodies, for the sender and for receivers.

The signed message is ``f"{timestamp}.{body}"``: binding the timestamp lets a receiver
reject replays older than a few minutes. Each tenant has its own secret (shared.callbacks.
tenants); while it is being rotated a callback carries one signature per valid secret in
``Medimg-Signature: t=<timestamp>,v1=<current>,v1=<previous>``, so receivers switch to the new
secret whenever they like within the overlap. The older headers X-Medimg-Timestamp and
X-Medimg-Signature (current secret only) are still sent.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Sequence

TIMESTAMP_HEADER = "X-Medimg-Timestamp"
SIGNATURE_HEADER = "X-Medimg-Signature"
SIGNATURES_HEADER = "Medimg-Signature"
_VERSION = "v1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Medimg-Signature` value: ``v1=<hex hmac_sha256(secret, "{timestamp}.{body}")>``."""
    message = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{_VERSION}={digest}"


def verify(
    secret: str,
    timestamp: str,
    signature: str,
    body: bytes,
    *,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """Whether a received callback is authentic and fresh (what a receiver should run).

    Args:
        secret: the shared MEDIMG_CALLBACK_SECRET.
        timestamp: the X-Medimg-Timestamp header.
        signature: the X-Medimg-Signature header.
        body: the raw request body, exactly as received.
        tolerance_seconds: oldest (or furthest in the future) timestamp accepted.
        now: the current Unix time; defaults to the clock.

    Returns:
        True when the signature matches and the timestamp is within tolerance.
    """
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The `Medimg-Signature` value: ``t=<timestamp>,v1=<hex>`` with one v1 per secret."""
    digests = [sign(secret, timestamp, body) for secret in secrets]
    return ",".join([f"t={timestamp}", *digests])


def verify_header(
    secrets: Iterable[str],
    header: str,
    body: bytes,
    *,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """Whether a `Medimg-Signature` header is fresh and signed by one of `secrets`.

    A receiver passes the secret(s) it holds: during a rotation both the new and the old one
    validate, because the sender signs with both.

    Args:
        secrets: the tenant callback secret(s) the receiver accepts.
        header: the Medimg-Signature header.
        body: the raw request body, exactly as received.
        tolerance_seconds: oldest (or furthest in the future) timestamp accepted.
        now: the current Unix time; defaults to the clock.

    Returns:
        True when the timestamp is within tolerance and any v1 signature matches any secret.
    """
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == _VERSION:
            signatures.append(f"{_VERSION}={value}")
    if timestamp is None or not signatures:
        return False
    return any(
        verify(secret, timestamp, signature, body, tolerance_seconds=tolerance_seconds, now=now)
        for secret in secrets
        for signature in signatures
    )
