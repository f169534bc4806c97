"""Input URLs against hostile hosts, on a real server: one that trickles a byte a second must cost
only its own request (never the threads that serve /healthz, status reads and other submits), and
one that streams without a content-length is cut off at the size cap."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.server.conftest import Server

SMALL = {"img_width": 64, "img_height": 64, "num_inference_steps": 2, "prior_steps": 2}
NATIVE_SMALL = {"prompt": "x", "width": 64, "height": 64, "steps": 2, "prior_steps": 2}
SLOW_REQUESTS = 45
DEADLINE_S = 3.0


@dataclass
class DripHost:
    """A loopback HTTP server that answers every request with a 200 header, then `chunk` bytes every
    `every` seconds, without a content-length, for at most `lasts` seconds: it stops by itself."""

    chunk: bytes = b"x"
    every: float = 1.0
    lasts: float = 25.0
    connections: int = 0
    open_now: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> str:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        ends = time.monotonic() + self.lasts
        while not self.stop.is_set() and time.monotonic() < ends:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._drip, args=(conn, ends), daemon=True).start()
        self.sock.close()

    def _drip(self, conn: socket.socket, ends: float) -> None:
        with self.lock:
            self.connections += 1
            self.open_now += 1
        try:
            with conn:
                conn.settimeout(2)
                conn.recv(65536)  # the request; small enough to come in one read
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\nconnection: close\r\n\r\n")
                while not self.stop.is_set() and time.monotonic() < ends:
                    conn.sendall(self.chunk)
                    self.stop.wait(self.every)
        except OSError:
            pass  # the server gave up on us: what we want
        finally:
            with self.lock:
                self.open_now -= 1


@pytest.fixture
def drip() -> Iterator[DripHost]:
    host = DripHost()
    yield host
    host.stop.set()


def _timed(call: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = call()
    return time.monotonic() - started, response


def test_slow_input_hosts_cost_only_their_own_requests(serve: Callable[..., Server], drip: DripHost) -> None:
    base = drip.start()
    server = serve(
        KS_ALLOW_PRIVATE_URLS="true",  # loopback stands in for a slow public host
        KS_FETCH_TIMEOUT_SECONDS=str(DEADLINE_S),
        KS_RATE_LIMIT_PER_MINUTE="0",
    )
    client = httpx.Client(base_url=server.url, timeout=60)
    existing = client.post("/v1/jobs", json=NATIVE_SMALL)
    assert existing.status_code == 201
    results: list[tuple[float, httpx.Response]] = []

    def slow_submit(i: int) -> None:
        body = {"prompt": "x", "image": f"{base}/{i}.png", **SMALL}
        with httpx.Client(base_url=server.url, timeout=60) as own:
            results.append(_timed(lambda: own.post("/v2/kandinsky2.2-img2img", json=body)))

    threads = [threading.Thread(target=slow_submit, args=(i,), daemon=True) for i in range(SLOW_REQUESTS)]
    for thread in threads:
        thread.start()
    waited = time.monotonic() + 10
    while drip.open_now < 40 and time.monotonic() < waited:  # the trickles are in flight
        time.sleep(0.05)
    assert drip.open_now >= 40, drip.open_now

    probe = httpx.Client(base_url=server.url, timeout=10)
    health, healthz = _timed(lambda: probe.get("/healthz"))
    status, read = _timed(lambda: probe.get(f"/v1/jobs/{existing.json()['id']}"))
    text_only, submitted = _timed(lambda: probe.post("/v2/kandinsky2.2-txt2img", json={"prompt": "x", **SMALL}))
    still_dripping = drip.open_now
    print(f"during {still_dripping} trickles: /healthz {health:.3f} s, status {status:.3f} s, submit {text_only:.3f} s")
    assert healthz.status_code == 200 and health < 1.0
    assert read.status_code == 200 and status < 1.0
    assert submitted.status_code == 200 and text_only < 1.0
    assert still_dripping >= 40  # measured while they were all still held open

    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == SLOW_REQUESTS
    for took, response in results:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error.startswith("image") and f"{DEADLINE_S:g} s" in error, error
        assert DEADLINE_S - 0.5 < took < DEADLINE_S + 5, took
    print(f"slow requests ended after {min(t for t, _ in results):.2f}..{max(t for t, _ in results):.2f} s")


def test_an_input_streamed_without_a_length_stops_at_the_size_cap(serve: Callable[..., Server]) -> None:
    host = DripHost(chunk=b"\0" * 65536, every=0.001, lasts=20)
    base = host.start()
    try:
        server = serve(KS_ALLOW_PRIVATE_URLS="true", KS_MAX_INPUT_BYTES=str(256 * 1024))
        body = {"prompt": "x", "image": f"{base}/big.png", **SMALL}
        response = httpx.post(f"{server.url}/v2/kandinsky2.2-img2img", json=body, timeout=30)
    finally:
        host.stop.set()
    assert response.status_code == 413, response.text
    assert response.json()["error"].startswith("image")
