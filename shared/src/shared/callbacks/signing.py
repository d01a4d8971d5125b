"""HMAC-SHA256 signatures of callback bodies, for the sender and for receivers.

The signed message is ``f"{timestamp}.{body}"``: binding the timestamp lets a receiver
reject replays older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Medimg-Timestamp"
SIGNATURE_HEADER = "X-Medimg-Signature"
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
