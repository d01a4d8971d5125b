"""Job-completion callbacks: URL policy (no SSRF), outbox rows, HMAC signatures.

Workers never call out: a finished job gets a `callback_delivery` row in the transaction
that finishes it, and the API's delivery loop (api.callback_delivery) sends it.
"""

from shared.callbacks.outbox import OwnerKind, enqueue_callbacks, enqueue_statement
from shared.callbacks.policy import (
    CallbackPolicy,
    CallbackTarget,
    check_addresses,
    embedded_ipv4,
    parse_callback_url,
    validate_callback_url,
)
from shared.callbacks.signing import (
    SIGNATURE_HEADER,
    SIGNATURES_HEADER,
    TIMESTAMP_HEADER,
    sign,
    signature_header,
    verify,
    verify_header,
)

__all__ = [
    "SIGNATURE_HEADER",
    "SIGNATURES_HEADER",
    "TIMESTAMP_HEADER",
    "CallbackPolicy",
    "CallbackTarget",
    "OwnerKind",
    "check_addresses",
    "embedded_ipv4",
    "enqueue_callbacks",
    "enqueue_statement",
    "parse_callback_url",
    "sign",
    "signature_header",
    "validate_callback_url",
    "verify",
    "verify_header",
]
