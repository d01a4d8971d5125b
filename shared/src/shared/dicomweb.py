"""DICOMweb endpoints of a tenant's PACS: which base URLs may be registered, and clients.

A PACS lives on the hospital's private network, so unlike callbacks (public addresses
only) private addresses are fine here; what bounds the gateway's reach is the operator's
allow-list MEDIMG_DICOMWEB_ALLOWED_HOSTS (hostnames, `*.domain`, IPs or CIDRs). Link-local
addresses (cloud metadata at 169.254.169.254) are refused unless a CIDR names them.
Credentials are stored server-side and sent by the gateway only; TLS is verified unless
the endpoint was registered with verify_tls=false.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from dicomweb_client import DICOMwebClient

from shared.callbacks.policy import embedded_ipv4, resolve
from shared.config import Settings
from shared.db.dicom_models import PacsAuth, PacsEndpoint
from shared.errors import InvalidRequest

MAX_URL_LENGTH = 2048
TIMEOUT_SECONDS = 30.0

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HostPolicy:
    hostnames: frozenset[str]
    wildcards: tuple[str, ...]
    networks: tuple[IPNetwork, ...]
    allow_http: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        return cls.from_entries(settings.dicomweb_allowed_hosts, settings.dicomweb_allow_http)

    @classmethod
    def from_entries(cls, entries: list[str], allow_http: bool) -> HostPolicy:
        """A policy from allow-list entries (hostnames, `*.domain`, IPs or CIDRs)."""
        hostnames, wildcards, networks = set(), [], []
        for entry in (e.strip().lower().rstrip(".") for e in entries):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if entry.startswith("*."):
                    wildcards.append(entry[1:])
                elif entry:
                    hostnames.add(entry)
        return cls(frozenset(hostnames), tuple(wildcards), tuple(networks), allow_http)

    def _named(self, host: str) -> bool:
        return host in self.hostnames or any(host.endswith(w) for w in self.wildcards)

    def _address_ok(self, text: str, named: bool) -> bool:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if any(address in n for n in self.networks):
            return True
        embedded = embedded_ipv4(address)
        if embedded:  # NAT64/6to4/Teredo/mapped: judged as the IPv4 address reached
            return all(self._address_ok(str(v4), named) for v4 in embedded)
        return named and not address.is_link_local and not address.is_multicast


def validate_pacs_url(url: str, settings: Settings) -> str:
    """Check a PACS base URL against the allow-list (resolves DNS: run it off the event loop).

    Returns:
        The URL without a trailing slash.

    Raises:
        InvalidRequest: not http(s), credentials in the URL, or host/addresses not allowed.
    """
    policy = HostPolicy.from_settings(settings)
    return validate_base_url(url, policy, what="PACS", setting="MEDIMG_DICOMWEB_ALLOWED_HOSTS")


def validate_base_url(url: str, policy: HostPolicy, *, what: str, setting: str) -> str:
    """Check a hospital-network base URL (a PACS, a FHIR server) against `policy`.

    Args:
        url: the base URL as given.
        policy: the operator's allow-list for this kind of server.
        what: the kind of server, for messages.
        setting: the environment variable holding the allow-list, for messages.

    Returns:
        The URL without a trailing slash.

    Raises:
        InvalidRequest: not http(s), credentials in the URL, or host/addresses not allowed.
    """
    url = url.strip().rstrip("/")
    if not (policy.hostnames or policy.wildcards or policy.networks):
        raise InvalidRequest(f"no {what} may be registered: {setting} is empty on this server")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"`base_url` is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidRequest(f"`base_url` is not a valid URL: {exc}") from None
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidRequest(f"`base_url` must use {' or '.join(schemes)}")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("`base_url` must not carry credentials: use `auth`")
    host = (parts.hostname or "").lower().rstrip(".")
    named = policy._named(host)
    addresses = resolve(host, port)
    if not addresses:
        raise InvalidRequest(f"`base_url` host {host!r} does not resolve")
    if not all(policy._address_ok(a, named) for a in addresses):
        raise InvalidRequest(
            f"`base_url` host {host!r} is not in this server's {what} allow-list ({setting})"
        )
    return url


def client_for(endpoint: PacsEndpoint) -> DICOMwebClient:
    """A dicomweb-client for a registered endpoint, with its credentials and TLS setting."""
    session = requests.Session()
    session.trust_env = False  # no proxy or netrc from the environment
    session.verify = endpoint.verify_tls
    if endpoint.auth == PacsAuth.BASIC:
        session.auth = (endpoint.username or "", endpoint.secret or "")
    elif endpoint.auth == PacsAuth.BEARER:
        session.headers["Authorization"] = f"Bearer {endpoint.secret or ''}"
    return DICOMwebClient(endpoint.base_url, session=session, timeout=TIMEOUT_SECONDS)
