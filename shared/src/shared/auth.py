"""API keys: generation, hashing, scopes. Keys are shown once and stored only as hashes.

A key looks like ``mk_<prefix>_<secret>``: the prefix finds the row, the SHA-256 of the
whole key is compared in constant time. Keys are 190+ bits of randomness, so a fast
hash is as safe here as a password KDF would be, and cheap on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    JOBS_WRITE = "jobs:write"
    JOBS_READ = "jobs:read"
    TRAIN = "train"
    MODELS_ADMIN = "models:admin"
    ADMIN = "admin"
    # Confirm or correct job results (issue 17): reviewers' feedback becomes training data.
    REVIEW = "review"
    # The platform operator: every tenant's audit log, shared models, whole-tenant deletion.
    # Only ever granted explicitly (`medimg keys create --platform-operator`); `admin` is a
    # tenant administrator and never implies it.
    PLATFORM_ADMIN = "platform:admin"


ALL_SCOPES = frozenset(Scope)
KEY_PREFIX = "mk"


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    digest: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> NewKey:
    prefix = secrets.token_hex(4)
    plaintext = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(24)}"
    return NewKey(plaintext, prefix, hash_key(plaintext))


def split_prefix(plaintext: str) -> str | None:
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 8:
        return None
    return parts[1]


def matches(plaintext: str, digest: str) -> bool:
    return hmac.compare_digest(hash_key(plaintext), digest)


def has_scope(granted: frozenset[str], needed: Scope) -> bool:
    """`platform:admin` implies every scope; `admin` every tenant scope (not the operator's);
    `jobs:write` implies `jobs:read`."""
    if needed in granted or Scope.PLATFORM_ADMIN in granted:
        return True
    if needed == Scope.PLATFORM_ADMIN:
        return False
    if Scope.ADMIN in granted:
        return True
    return needed == Scope.JOBS_READ and Scope.JOBS_WRITE in granted


def is_platform_operator(granted: frozenset[str]) -> bool:
    return Scope.PLATFORM_ADMIN in granted
