"""A tenant's callback settings: its signing secret's rotation state and host allow-list."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

MAX_OVERLAP_SECONDS = 7 * 24 * 3600


class CallbackSettingsPublic(BaseModel):
    secret_generation: int = Field(
        description="0: callbacks are signed with the server's secret; n: the tenant's n-th own"
    )
    previous_valid_until: datetime | None = Field(
        None, description="Until then callbacks carry a second signature, by the previous secret"
    )
    allowed_hosts: list[str] | None = Field(
        None, description="The tenant's allow-list (narrows the server's); None: the server's"
    )


class CallbackSecretRotate(BaseModel):
    previous_valid_seconds: int = Field(
        86400,
        ge=0,
        le=MAX_OVERLAP_SECONDS,
        description="How long the previous secret keeps signing too (0: stops at once)",
    )


class CallbackSecretPublic(CallbackSettingsPublic):
    secret: str = Field(
        description="The new HMAC-SHA256 key; shown only in this response. Verify the "
        "`Medimg-Signature` header's v1 values with it"
    )


class CallbackAllowedHostsUpdate(BaseModel):
    allowed_hosts: list[str] | None = Field(
        description="Host names, `*.domain`, IPs or CIDRs; null: back to the server's list",
        max_length=100,
    )
