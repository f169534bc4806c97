"""A real redis-server for tests: started on a free port in a directory of its own, stopped at the end.

The Redis backends are tested against the server itself, not a fake, because what they promise
(atomic scripts, persistence across a restart) is the server's. CI installs redis-server; without
it the tests that need one fail and say so, rather than pass by skipping.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


class RedisServer:
    """One redis-server process with AOF on; stop() and start() again reuse its port and its data."""

    def __init__(self, directory: Path, *, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(
                "redis-server is not installed, and the Redis backend tests need a real one: "
                "install it (apt-get install redis-server) and run the tests again."
            )
        self.executable = executable
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM shuts down cleanly; SIGKILL is a crash, which only the AOF survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)
        self.process = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
