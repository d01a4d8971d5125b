"""Which callback URLs may be called: an allow-list of hosts, then public addresses only.

A URL passes when its scheme is https (http only if configured), its host matches
MEDIMG_CALLBACK_ALLOWED_HOSTS, and every address the host resolves to is public, i.e.
not loopback, private, link-local (169.254.169.254 metadata included), shared, reserved,
multicast or in MEDIMG_CALLBACK_BLOCKED_CIDRS, unless it lies inside an allow-listed CIDR.
Delivery resolves again and connects to the checked address (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.callbacks.tenants import tenant_allows_host
from shared.config import Settings
from shared.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class CallbackPolicy:
    hostnames: frozenset[str]
    wildcards: tuple[str, ...]  # ".example.org" for "*.example.org"
    networks: tuple[IPNetwork, ...]
    blocked: tuple[IPNetwork, ...]
    allow_http: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> CallbackPolicy:
        hostnames: set[str] = set()
        wildcards: list[str] = []
        networks: list[IPNetwork] = []
        for entry in (e.strip().lower().rstrip(".") for e in settings.callback_allowed_hosts):
            network = _network(entry)
            if network is not None:
                networks.append(network)
            elif entry.startswith("*."):
                wildcards.append(entry[1:])
            elif entry:
                hostnames.add(entry)
        blocked = []
        for entry in settings.callback_blocked_cidrs:
            network = _network(entry.strip())
            if network is None:
                raise ValueError(f"MEDIMG_CALLBACK_BLOCKED_CIDRS: {entry!r} is not a CIDR")
            blocked.append(network)
        return cls(
            frozenset(hostnames),
            tuple(wildcards),
            tuple(networks),
            tuple(blocked),
            settings.callback_allow_http,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.hostnames or self.wildcards or self.networks)

    def allows_host(self, host: str) -> bool:
        address = _address(host)
        if address is not None:
            return any(address in n for n in self.networks)
        return host in self.hostnames or any(host.endswith(w) for w in self.wildcards)

    def allows_address(self, address: IPAddress) -> bool:
        if any(address in n for n in self.networks):
            return True
        if any(address in n for n in self.blocked):
            return False
        embedded = embedded_ipv4(address)
        if embedded:
            # The packet ends up at the IPv4 address: judge that one (NAT64 64:ff9b::a00:1
            # is 10.0.0.1, and Python calls it global).
            return all(self.allows_address(v4) for v4 in embedded)
        if address in NAT64_LOCAL:
            return False  # local-use NAT64 (RFC 8215): an operator's own translator
        return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class CallbackTarget:
    url: str
    scheme: str
    host: str  # lower-case, no brackets
    port: int


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215 local use
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d (RFC 4291)


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 address(es) an IPv6 address reaches through a translator or tunnel.

    IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96),
    6to4 (2002::/16) and Teredo (2001::/32: its server and its client). Empty for any other
    address, and for IPv4 addresses.
    """
    if not isinstance(address, ipaddress.IPv6Address):
        return ()
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address in NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo
    return ()


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # ::ffff:10.0.0.1 reaches 10.0.0.1: judge it as the IPv4 address it is.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_callback_url(
    url: str, policy: CallbackPolicy, tenant_hosts: Sequence[str] | None = None
) -> CallbackTarget:
    """Check a callback URL's form and host against the policy (no DNS lookup).

    `tenant_hosts` is the tenant's own allow-list (shared.callbacks.tenants), which narrows
    the server's: the host must be on both.

    Raises:
        InvalidRequest: callbacks are off, or the URL is malformed or not allow-listed.
    """
    if not policy.enabled:
        raise InvalidRequest(
            "callbacks are disabled on this server (MEDIMG_CALLBACK_ALLOWED_HOSTS is empty)"
        )
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"`callback_url` is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"`callback_url` is not a valid URL: {exc}") from None
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidRequest(f"`callback_url` must use {' or '.join(schemes)}")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("`callback_url` must not carry credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidRequest("`callback_url` has no host")
    if not policy.allows_host(host):
        raise InvalidRequest(
            f"`callback_url` host {host!r} is not in this server's callback allow-list"
        )
    if not tenant_allows_host(tenant_hosts, host):
        raise InvalidRequest(
            f"`callback_url` host {host!r} is not in this tenant's callback allow-list"
        )
    default_port = 443 if parts.scheme == "https" else 80
    return CallbackTarget(url, parts.scheme, host, port or default_port)


def check_addresses(
    target: CallbackTarget, addresses: Iterable[str], policy: CallbackPolicy
) -> list[IPAddress]:
    """The resolved addresses, all of which must be allowed: any private one fails the URL.

    Raises:
        InvalidRequest: the host did not resolve, or resolved to a non-public address.
    """
    parsed = [a for a in (_address(text.split("%", 1)[0]) for text in addresses) if a]
    if not parsed:
        raise InvalidRequest(f"`callback_url` host {target.host!r} does not resolve")
    for address in parsed:
        if not policy.allows_address(address):
            raise InvalidRequest(
                f"`callback_url` host {target.host!r} resolves to a loopback, private, "
                "link-local or otherwise internal address; callbacks go to public addresses "
                "only"
            )
    return parsed


def resolve(host: str, port: int) -> list[str]:
    """The host's addresses (blocking; call from a thread or a sync context)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


def validate_callback_url(
    url: str, settings: Settings, tenant_hosts: Sequence[str] | None = None
) -> str:
    """Check a client-supplied callback URL; use before storing it on a job.

    Blocking (resolves DNS): from async code, run it in a thread.

    Args:
        url: the `callback_url` the client sent.
        settings: the server's settings (allow-list, http, blocked CIDRs).
        tenant_hosts: the tenant's own allow-list, or None when it has none.

    Returns:
        The URL, unchanged.

    Raises:
        InvalidRequest: callbacks are off, or the URL is not allowed (422).
    """
    policy = CallbackPolicy.from_settings(settings)
    target = parse_callback_url(url.strip(), policy, tenant_hosts)
    check_addresses(target, resolve(target.host, target.port), policy)
    return target.url
