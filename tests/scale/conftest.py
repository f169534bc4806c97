"""Several real processes on one Redis: API nodes and workers, each in its own process group."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.redis_server import RedisServer, free_port
from tests.server.conftest import kill_group, stop_group


@dataclass
class Node:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def kill(self) -> None:
        kill_group(self.process)

    def stop(self) -> None:
        stop_group(self.process, timeout=30)


@dataclass
class Cluster:
    redis: RedisServer
    directory: Path
    nodes: list[Node] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "KS_MODEL": "tiny",
            "KS_STORE_URL": self.redis.url,
            "KS_LEASE_SECONDS": "3",
            "KS_DRAIN_SECONDS": "5",
        }

    def _start(self, name: str, args: list[str]) -> Node:
        log = self.directory / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "kandinsky_serve", *args],
            env=self.env(),
            cwd=self.directory,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        node = Node(name, process, log)
        self.nodes.append(node)
        return node

    def api(self, name: str) -> Node:
        port = free_port()
        node = self._start(name, ["api", "--port", str(port)])
        node.url = f"http://127.0.0.1:{port}"
        self._wait(node, lambda: httpx.get(f"{node.url}/healthz", timeout=2).status_code == 200)
        return node

    def worker(self, name: str) -> Node:
        return self._start(name, ["worker", "--device", "cpu"])

    def ready_workers(self, api: Node, count: int, key: str | None = None) -> list[dict]:
        headers = {"x-api-key": key} if key else {}  # /readyz needs a key once keys exist

        def ready() -> list[dict]:
            workers = httpx.get(f"{api.url}/readyz", headers=headers, timeout=5).json()["workers"]
            live = [w for w in workers if w["state"] in ("ready", "busy")]
            return live if len(live) >= count else []

        return self._wait(None, ready)

    def _wait(self, node: Node | None, predicate, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node is not None and node.process.poll() is not None:
                raise RuntimeError(f"{node.name} exited: {node.log.read_text()[-3000:]}")
            try:
                value = predicate()
                if value:
                    return value
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise AssertionError("condition not met in time")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    redis = RedisServer(tmp_path / "redis", extra=("--appendfsync", "always")).start()
    cluster = Cluster(redis, tmp_path)
    yield cluster
    for node in cluster.nodes:
        node.stop()
    redis.stop()
