"""Which addresses a caller's URL may reach: public unicast only, whatever the IPv6 spelling."""

from __future__ import annotations

from ipaddress import IPv6Address, ip_address

import pytest

from kandinsky_serve.api.inputs import check_public_url
from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.net.addresses import embedded_ipv4, refusal
from kandinsky_serve.settings import Settings

REFUSED = [
    # IPv6 forms that carry a loopback IPv4 address
    "64:ff9b::7f00:1",  # NAT64, well-known prefix
    "64:ff9b::a00:1",  # NAT64 to 10.0.0.1
    "64:ff9b:1::7f00:1",  # NAT64, local-use prefix
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",  # IPv4-mapped cloud metadata
    "::ffff:0:7f00:1",  # IPv4-translated
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:7f00:1::1",  # Teredo, server 127.0.0.1
    "2001:0:5db8:d822::1",  # Teredo, public server: Teredo is never a target
    # IPv4
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # shared (carrier-grade NAT)
    "169.254.169.254",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "240.0.0.1",
    "255.255.255.255",
    # IPv6
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    "100::1",
    "5f00::1",
    "4000::1",  # outside 2000::/3: not allocated
]

ALLOWED = [
    "93.184.216.34",
    "1.1.1.1",
    "8.8.8.8",
    "2606:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:93.184.216.34",  # mapped public IPv4 is that IPv4 host
    "64:ff9b::5db8:d822",  # NAT64 to a public IPv4 host
    "2002:5db8:d822::1",  # 6to4 of a public IPv4 host
]


def url(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:8080/x.png"


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_forms_are_refused(address: str) -> None:
    assert refusal(ip_address(address)) is not None
    with pytest.raises(ServeError) as refused:
        check_public_url(url(address), "image", Settings(allow_private_urls=False))
    assert refused.value.code is ErrorCode.INVALID_INPUT and refused.value.message.startswith("image")


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ip_address(address)) is None
    check_public_url(url(address), "image", Settings(allow_private_urls=False))


def test_the_reason_names_the_ipv4_address_inside() -> None:
    assert refusal(ip_address("::ffff:0:7f00:1")) == "loopback (127.0.0.1 inside an IPv6 address)"
    assert refusal(ip_address("2002:a9fe:a9fe::")) == "link-local (169.254.169.254 inside an IPv6 address)"
    assert refusal(ip_address("224.0.0.1")) == "multicast"
    assert embedded_ipv4(IPv6Address("2606:4700::1111")) is None


def test_allow_private_urls_lets_loopback_through_but_not_other_schemes() -> None:
    check_public_url("http://127.0.0.1:9/x.png", "image", Settings(allow_private_urls=True))
    check_public_url("http://[::ffff:0:7f00:1]:9/x.png", "image", Settings(allow_private_urls=True))
    for bad in ("file:///etc/passwd", "ftp://example.com/x.png", "http:///x.png"):
        with pytest.raises(ServeError) as refused:
            check_public_url(bad, "webhook", Settings(allow_private_urls=True))
        assert refused.value.message.startswith("webhook")
