"""Which IP addresses a caller-chosen URL may reach: public unicast only.

Python's `is_global` is not enough on its own (it calls multicast, NAT64 and 6to4 addresses
global, and its lists change between Python releases), so the ranges are spelled out here from
IANA's special-purpose registries, and every IPv6 form that carries an IPv4 address inside it is
judged by that IPv4 address: a filter that looked only at the IPv6 form would let `[::ffff:0:7f00:1]`
or `[64:ff9b::7f00:1]` through to loopback on hosts that translate them.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

IPAddress = IPv4Address | IPv6Address

_V4_REFUSED: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # with 255.255.255.255, broadcast
    )
)

# IPv6 forms whose last (or, for 6to4, second and third) 32 bits are an IPv4 address the packet
# may end up at; judged by that address
_MAPPED = IPv6Network("::ffff:0:0/96")
_TRANSLATED = IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = IPv6Network("2002::/16")
_TEREDO = IPv6Network("2001::/32")

_V6_GLOBAL_UNICAST = IPv6Network("2000::/3")
_V6_REFUSED: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), why)
    for net, why in (
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, translated, compatible, NAT64, 6to4;
    for Teredo the server's), or None."""
    if any(address in net for net in (_MAPPED, _TRANSLATED, _COMPATIBLE, _NAT64)):
        return IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    if address in _TEREDO:
        return IPv4Address((int(address) >> 64) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why a URL may not reach this address ("loopback", "multicast", ...), or None when it may."""
    if address.version == 4:
        return _v4_refusal(IPv4Address(address))
    v6 = IPv6Address(int(address))  # without a %scope: the ranges decide
    if v6.is_loopback or v6.is_unspecified:
        return "loopback" if v6.is_loopback else "unspecified"
    inner = embedded_ipv4(v6)
    if inner is not None:
        why = _v4_refusal(inner)
        if why is not None:
            return f"{why} ({inner} inside an IPv6 address)"
        if v6 in _TEREDO:
            return "Teredo"
        return None  # e.g. NAT64 to a public IPv4 host: as public as that host
    for net, why in _V6_REFUSED:
        if v6 in net:
            return why
    if v6 not in _V6_GLOBAL_UNICAST:
        return "reserved"
    return None


def _v4_refusal(address: IPv4Address) -> str | None:
    for net, why in _V4_REFUSED:
        if address in net:
            return why
    if not address.is_global:  # whatever a newer Python knows of that this list does not
        return "not global"
    return None


def parse_address(text: str) -> IPAddress | None:
    """An IP address written as one ("127.0.0.1", "::1", "[::1]"), else None (a host name)."""
    try:
        return ip_address(text.strip("[]"))
    except ValueError:
        return None
