"""Per-tenant callback settings: the tenant's HMAC secret (rotatable) and host allow-list.

No secret is stored. A tenant's secret is derived from the server's MEDIMG_CALLBACK_SECRET,
its id and a generation number: ``hex(HMAC-SHA256(server secret, "medimg-callback:v1:<tenant
id>:<generation>"))``. Rotating increments the generation; a database dump therefore leaks
no signing key, and one tenant's secret tells nothing about another's (HMAC is a PRF).
During a rotation the previous generation stays valid until `previous_valid_until`, and
callbacks carry both signatures (shared.callbacks.signing.signature_header).

A tenant that has never rotated (generation 0) is signed with the server secret itself, as
before per-tenant secrets existed; rotating once moves it to its own secret, with the
server secret as the "previous" one for the overlap.

The allow-list narrows the server's (MEDIMG_CALLBACK_ALLOWED_HOSTS): a URL must pass both.
Its entries only match host names; whether an address is public is still the server
policy's decision, so a tenant cannot allow-list its way into the cluster.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, utcnow
from shared.errors import InvalidRequest

MAX_ALLOWED_HOSTS = 100
_HOSTNAME = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


class TenantCallbackSettings(Base):
    """One row per tenant that rotated its secret or set an allow-list."""

    __tablename__ = "tenant_callback_settings"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True
    )
    # 0: the server secret (never rotated); n >= 1: the tenant's n-th derived secret.
    secret_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Generation - 1 also signs callbacks until then; None or past: only the current one.
    previous_valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Host names, `*.domain` wildcards, IPs or CIDRs; None: the server's allow-list alone.
    allowed_hosts: Mapped[list[str] | None] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), default=utcnow
    )


def derive_secret(server_secret: str, tenant_id: uuid.UUID, generation: int) -> str:
    """The tenant's callback secret of one generation (generation 0: the server secret)."""
    if generation == 0:
        return server_secret
    message = f"medimg-callback:v1:{tenant_id}:{generation}".encode()
    return hmac.new(server_secret.encode(), message, hashlib.sha256).hexdigest()


def signing_secrets(
    server_secret: str, tenant_id: uuid.UUID, row: TenantCallbackSettings | None, now: datetime
) -> list[str]:
    """The secrets a tenant's callback is signed with now: current first, then previous."""
    generation = row.secret_generation if row is not None else 0
    secrets = [derive_secret(server_secret, tenant_id, generation)]
    if (
        row is not None
        and generation >= 1
        and row.previous_valid_until is not None
        and now < row.previous_valid_until
    ):
        secrets.append(derive_secret(server_secret, tenant_id, generation - 1))
    return secrets


def normalize_allowed_hosts(entries: Sequence[str]) -> list[str]:
    """Check and normalise a tenant's allow-list entries.

    Raises:
        InvalidRequest: too many entries, or one that is no host name, `*.domain`, IP or CIDR.
    """
    if len(entries) > MAX_ALLOWED_HOSTS:
        raise InvalidRequest(
            f"`allowed_hosts` may hold at most {MAX_ALLOWED_HOSTS} entries", field="allowed_hosts"
        )
    clean: list[str] = []
    for raw in entries:
        entry = raw.strip().lower().rstrip(".")
        if _network(entry) is None and (len(entry) > 253 or not _HOSTNAME.match(entry)):
            raise InvalidRequest(
                f"`allowed_hosts`: {raw!r} is not a host name, `*.domain`, IP address or CIDR",
                field="allowed_hosts",
            )
        if entry not in clean:
            clean.append(entry)
    return clean


def tenant_allows_host(entries: Sequence[str] | None, host: str) -> bool:
    """Whether the tenant's allow-list (None: no list of its own) admits this URL host."""
    if entries is None:
        return True
    host = host.lower().rstrip(".")
    address = _network(host)
    for entry in entries:
        network = _network(entry)
        if network is not None:
            if address is not None and address.num_addresses == 1:
                if address.network_address in network:
                    return True
        elif entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
