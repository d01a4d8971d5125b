"""Callback and PACS destinations given as IPv6 forms of IPv4 addresses are judged by the IPv4
address they reach: IPv4-mapped, IPv4-compatible, NAT64, 6to4 and Teredo."""

from __future__ import annotations

import ipaddress

import pytest

from shared.callbacks import CallbackPolicy, check_addresses, embedded_ipv4, parse_callback_url
from shared.config import Settings
from shared.dicomweb import HostPolicy
from shared.errors import InvalidRequest

PRIVATE = ["10.0.0.1", "127.0.0.1", "169.254.169.254", "172.16.5.4", "192.168.1.1", "100.64.0.1"]
PUBLIC = ["8.8.8.8", "1.1.1.1"]


def nat64(v4: str) -> str:
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(_v4(v4))))


def sixtofour(v4: str) -> str:
    return str(ipaddress.IPv6Address((0x2002 << 112) | (int(_v4(v4)) << 80) | 1))


def teredo(server: str, client: str) -> str:
    # 2001:0000:<server>:<flags>:<port ^ ffff>:<client ^ ffffffff> (RFC 4380).
    value = (0x20010000 << 96) | (int(_v4(server)) << 64) | (0x8000 << 48) | (0x63BF << 32)
    return str(ipaddress.IPv6Address(value | (int(_v4(client)) ^ 0xFFFFFFFF)))


def mapped(v4: str) -> str:
    return f"::ffff:{v4}"


def compatible(v4: str) -> str:
    return f"::{v4}"


def _v4(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


FORMS = {"nat64": nat64, "6to4": sixtofour, "mapped": mapped, "compatible": compatible}


def policy() -> CallbackPolicy:
    return CallbackPolicy.from_settings(
        Settings(callback_allowed_hosts=["hooks.example.org"], callback_secret="s" * 32)
    )


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("v4", PRIVATE + PUBLIC)
def test_embedded_ipv4_is_extracted(form: str, v4: str) -> None:
    assert embedded_ipv4(ipaddress.ip_address(FORMS[form](v4))) == (_v4(v4),)


def test_teredo_yields_server_and_client() -> None:
    address = ipaddress.ip_address(teredo("65.54.227.120", "10.0.0.1"))
    assert embedded_ipv4(address) == (_v4("65.54.227.120"), _v4("10.0.0.1"))


def test_plain_ipv6_and_ipv4_embed_nothing() -> None:
    for text in ("2001:4860:4860::8888", "fe80::1", "::1", "::", "8.8.8.8"):
        assert embedded_ipv4(ipaddress.ip_address(text)) == ()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("v4", PRIVATE)
def test_callbacks_refuse_ipv6_forms_of_internal_addresses(form: str, v4: str) -> None:
    p = policy()
    target = parse_callback_url("https://hooks.example.org/x", p)
    address = FORMS[form](v4)
    # Python's own view would let several through: 64:ff9b::a00:1 and 2002:a00:1::1 are
    # "global" to ipaddress.
    with pytest.raises(InvalidRequest, match="internal address"):
        check_addresses(target, [address], p)


@pytest.mark.parametrize("form", ["nat64", "6to4"])
@pytest.mark.parametrize("v4", PUBLIC)
def test_callbacks_accept_ipv6_forms_of_public_addresses(form: str, v4: str) -> None:
    p = policy()
    target = parse_callback_url("https://hooks.example.org/x", p)
    assert check_addresses(target, [FORMS[form](v4)], p)


def test_teredo_to_an_internal_client_is_refused_and_local_nat64_too() -> None:
    p = policy()
    target = parse_callback_url("https://hooks.example.org/x", p)
    for address in (teredo("65.54.227.120", "10.0.0.1"), "64:ff9b:1::a00:1"):
        with pytest.raises(InvalidRequest):
            check_addresses(target, [address], p)
    assert check_addresses(target, [teredo("65.54.227.120", "8.8.8.8")], p)


def test_blocked_cidrs_apply_to_embedded_addresses() -> None:
    p = CallbackPolicy.from_settings(
        Settings(
            callback_allowed_hosts=["hooks.example.org"],
            callback_blocked_cidrs=["8.8.8.0/24"],
            callback_secret="s" * 32,
        )
    )
    target = parse_callback_url("https://hooks.example.org/x", p)
    with pytest.raises(InvalidRequest):
        check_addresses(target, [nat64("8.8.8.8")], p)


def test_dicomweb_judges_embedded_addresses() -> None:
    """A PACS may be private, but never link-local (metadata), in whatever IPv6 dress."""
    pacs = HostPolicy.from_settings(
        Settings(dicomweb_allowed_hosts=["pacs.example.org", "10.1.0.0/16"])
    )
    for form in FORMS.values():
        assert not pacs._address_ok(form("169.254.169.254"), named=True)
        assert pacs._address_ok(form("10.1.2.3"), named=False)  # allow-listed network
        assert not pacs._address_ok(form("10.2.0.1"), named=False)
