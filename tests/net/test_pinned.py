"""Requests go to the address that was checked: a rebinding resolver never gets an input fetch or a
webhook to loopback, and over https the host name is still the SNI name and the certificate's."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from kandinsky_serve.api.dialects.replicate.webhooks import Deliverer
from kandinsky_serve.api.fetch import FetchFailed, fetch_image
from kandinsky_serve.api.inputs import image_bytes
from kandinsky_serve.domain.errors import ServeError
from kandinsky_serve.net import pinned
from kandinsky_serve.settings import Settings

PUBLIC = "93.184.216.34"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")


class Canary:
    """A loopback HTTP server that records every request it gets (it must get none, or the right ones)."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.server_names: list[str | None] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                canary.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("location", self.path.removeprefix("/redirect?to="))
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if context is not None:
            context.sni_callback = lambda sock, name, ctx: canary.server_names.append(name)  # type: ignore[assignment]
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def canary() -> Iterator[Canary]:
    made = Canary()
    yield made
    made.server.shutdown()


class Rebinder:
    """socket.getaddrinfo that answers a public address for `host` the first time, loopback after."""

    def __init__(self, host: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.host, self.lookups = host, 0
        real = socket.getaddrinfo

        def getaddrinfo(name: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if (name.decode() if isinstance(name, bytes) else name) != host:  # anyio passes bytes
                return real(name, port, *args, **kwargs)
            self.lookups += 1
            address = PUBLIC if self.lookups == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port or 80)))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


STRICT = Settings(allow_private_urls=False, fetch_timeout_seconds=2)


def test_a_rebinding_resolver_never_gets_an_input_fetch_to_loopback(
    canary: Canary, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = Rebinder("rebind.test", monkeypatch)
    with pytest.raises(ServeError) as failed:  # the public address answers nothing here
        image_bytes(f"http://rebind.test:{canary.port}/x.png", "image", STRICT)
    assert failed.value.message.startswith("image")
    assert canary.requests == []
    assert resolver.lookups == 1  # one lookup, checked, and the connection went where it said


def test_a_rebinding_resolver_never_gets_a_webhook_to_loopback(canary: Canary, monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = Rebinder("hooks.test", monkeypatch)
    deliverer = Deliverer(SimpleNamespace(settings=STRICT, deliveries=None))  # type: ignore[arg-type]
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    sent = anyio.run(deliverer._send, f"http://hooks.test:{canary.port}/hook", "msg_1", secret, b"{}")
    assert sent.value == "failed"  # not delivered (to be retried), and above all not to loopback
    assert canary.requests == []
    assert resolver.lookups == 1


def test_the_checked_address_gets_the_names_host_header(canary: Canary, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pinned, "resolve", lambda host, port: [pinned.parse_address("127.0.0.1")])
    lenient = Settings(allow_private_urls=True, fetch_timeout_seconds=2)
    assert anyio.run(fetch_image, f"http://images.test:{canary.port}/a.png?x=1", lenient) == PNG
    (method, path, headers), *_ = canary.requests
    assert (method, path, headers["host"]) == ("GET", "/a.png?x=1", f"images.test:{canary.port}")


def test_every_redirect_hop_is_checked_and_pinned(canary: Canary, monkeypatch: pytest.MonkeyPatch) -> None:
    # 127.0.0.1 plays a public host here, 127.0.0.2 the private one behind it
    monkeypatch.setattr(pinned, "refusal", lambda address: "private" if str(address) == "127.0.0.2" else None)
    monkeypatch.setattr(pinned, "resolve", lambda host, port: [pinned.parse_address("127.0.0.1")])
    start = f"http://images.test:{canary.port}/redirect?to="
    assert anyio.run(fetch_image, start + "/a.png", STRICT) == PNG  # relative: the same name, the same pin
    assert [(path, headers["host"]) for _, path, headers in canary.requests] == [
        ("/redirect?to=/a.png", f"images.test:{canary.port}"),
        ("/a.png", f"images.test:{canary.port}"),
    ]
    with pytest.raises(FetchFailed) as refused:
        anyio.run(fetch_image, start + f"http://127.0.0.2:{canary.port}/x.png", STRICT)
    assert refused.value.message.startswith("redirects to http://127.0.0.2") and "private" in refused.value.message
    assert len(canary.requests) == 3  # the private hop was never requested


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA, and a certificate it signed for pinned.test (openssl, as Debian ships it)."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    ext = folder / "ext.cnf"
    ext.write_text(
        "subjectAltName=DNS:pinned.test\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = [
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=ks test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=pinned.test"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "1", "-extfile", ext],
    ]  # fmt: skip
    for args in run:
        subprocess.run([str(a) for a in args], check=True, capture_output=True)
    return ca, cert, key


def test_https_keeps_the_host_name_for_sni_and_the_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca, cert, key = _certificates(tmp_path)  # scripts/system-deps.sh installs openssl where it is missing
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    tls = Canary(served)
    try:
        monkeypatch.setattr(pinned, "resolve", lambda host, port: [pinned.parse_address("127.0.0.1")])
        trusting = ssl.create_default_context(cafile=str(ca))
        monkeypatch.setattr(pinned, "ssl_context", lambda: trusting)
        lenient = Settings(allow_private_urls=True, fetch_timeout_seconds=5)
        assert anyio.run(fetch_image, f"https://pinned.test:{tls.port}/x.png", lenient) == PNG
        assert tls.server_names == ["pinned.test"]
        assert tls.requests[0][2]["host"] == f"pinned.test:{tls.port}"
        # the same address and certificate under another name: the certificate is checked against the name
        with pytest.raises(FetchFailed) as mismatch:
            anyio.run(fetch_image, f"https://other.test:{tls.port}/x.png", lenient)
        assert "ConnectError" in mismatch.value.message
        assert tls.server_names == ["pinned.test", "other.test"]
        # and against the trusted authorities: without the test CA, pinned.test is refused too
        monkeypatch.setattr(pinned, "ssl_context", lambda: ssl.create_default_context())
        with pytest.raises(FetchFailed):
            anyio.run(fetch_image, f"https://pinned.test:{tls.port}/x.png", lenient)
        assert len(tls.requests) == 1
    finally:
        tls.server.shutdown()
