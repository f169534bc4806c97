"""A real `kandinsky-serve serve` process on a free port, with the tiny model and its own data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log: Path
    key: str | None = None  # sent to /readyz, which needs one where keys are required

    @property
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    @property
    def probe_headers(self) -> dict[str, str]:
        return {"x-api-key": self.key} if self.key else {}

    def workers(self) -> list[dict]:
        return httpx.get(f"{self.url}/readyz", headers=self.probe_headers, timeout=10).json()["workers"]

    def kill(self) -> None:
        """SIGKILL the server and its workers at once, as a power cut would."""
        kill_group(self.process)

    def stop(self) -> None:
        stop_group(self.process, timeout=60)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with start_new_session and every process of its group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (a graceful stop), then SIGKILL the group if it takes longer than timeout."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)


def start_server(data_dir: Path, key: str | None = None, wait_ready: bool = True, **env: str) -> Server:
    """`key`: one created in data_dir before the start (keys are then required, /readyz included).
    Returns once /readyz says ready, or at once without `wait_ready`."""
    port = free_port()
    log = data_dir.parent / f"server-{port}.log"
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "KS_MODEL": "tiny",
        "KS_DATA_DIR": str(data_dir),
        "KS_PORT": str(port),
        "KS_LEASE_SECONDS": "3",
        "KS_DRAIN_SECONDS": "5",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "kandinsky_serve", "serve"],
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so kill() takes the workers too
    )
    server = Server(process, f"http://127.0.0.1:{port}", data_dir, log, key)
    if not wait_ready:
        return server
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/readyz", headers=server.probe_headers, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    server.kill()
    raise RuntimeError(f"server not ready in time: {log.read_text()[-3000:]}")


def wait_for(predicate: Callable[[], object], timeout: float = 120, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")
