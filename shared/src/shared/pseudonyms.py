"""Pseudonyms for patient and study identifiers: HMAC-SHA256 keyed by the de-id secret.

A plain hash of a medical record number can be reversed by hashing every MRN of a small
range; a keyed HMAC cannot without the secret (MEDIMG_DEIDENTIFY_UID_SALT, see
`Settings.uid_salt`). The same id and secret always give the same pseudonym, so grouping
images by patient for leak-free splits keeps working.
"""

from __future__ import annotations

import hashlib
import hmac


def pseudonym(kind: str, value: str, secret: bytes) -> str:
    """``<kind>-`` + 128 bits of HMAC-SHA256(secret, kind NUL value), in hex.

    Args:
        kind: what the id is (``patient``, ``study``, ``group``); part of the MAC input so
            equal strings of different kinds do not link.
        value: the identifier in clear.
        secret: the de-identification secret.

    Returns:
        A stable pseudonym of at most 64 characters.
    """
    mac = hmac.new(secret, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind}-{mac[:32]}"
