"""Job-completion callbacks: URL policy (no SSRF), outbox rows, HMAC signatures.

Workers never call out: a finished job gets a `callback_delivery` row in the transaction
that finishes it, and the API's delivery loop (api.callback_delivery) sends it.
"""

from shared.callbacks.outbox import OwnerKind, enqueue_callbacks, enqueue_statement
from shared.callbacks.policy import (
    CallbackPolicy,
    CallbackTarget,
    check_addresses,
    parse_callback_url,
    validate_callback_url,
)
from shared.callbacks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "CallbackPolicy",
    "CallbackTarget",
    "OwnerKind",
    "check_addresses",
    "enqueue_callbacks",
    "enqueue_statement",
    "parse_callback_url",
    "sign",
    "validate_callback_url",
    "verify",
]
