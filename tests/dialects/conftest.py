"""A real server on a socket with two API keys, for driving the dialects with the vendors' SDKs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server.conftest import Server, start_server


def create_key(data_dir: Path, name: str, credits: float | None = None) -> str:
    args = [sys.executable, "-m", "kandinsky_serve", "keys", "create", "--name", name, "--data-dir", str(data_dir)]
    if credits is not None:
        args += ["--credits", str(credits)]
    result = subprocess.run(args, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return result.stdout.strip().splitlines()[-1]  # the key is the last line


@dataclass
class KeyedServer:
    server: Server
    alice: str  # unlimited credits
    bob: str  # 3 credits

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    """One server per test module (starting one costs seconds); tests must not depend on each other."""
    data_dir = tmp_path_factory.mktemp("keyed") / "data"
    alice = create_key(data_dir, "alice")
    bob = create_key(data_dir, "bob", credits=3)
    server = start_server(data_dir, KS_ALLOW_PRIVATE_URLS="false")
    yield KeyedServer(server, alice, bob)
    server.stop()
