"""Shared fixtures: the built-in tiny engines (built once per session) and small input images."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from tests.server.conftest import Server

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def engine22():
    from kandinsky_serve.engine.engine import Engine

    return Engine.create("tiny", device="cpu")


@pytest.fixture(scope="session")
def engine21():
    from kandinsky_serve.engine.engine import Engine

    return Engine.create("tiny-2.1", device="cpu")


@pytest.fixture(scope="session")
def photo() -> bytes:
    """A 120x100 picture: a sky gradient with a red disc."""
    image = Image.new("RGB", (120, 100))
    draw = ImageDraw.Draw(image)
    for y in range(100):
        draw.line([(0, y), (119, y)], fill=(40, 90 + y, 200))
    draw.ellipse([30, 20, 90, 80], fill=(220, 30, 30))
    return png(image)


@pytest.fixture(scope="session")
def mask() -> bytes:
    """White (repaint) over the left half, black (keep) elsewhere."""
    image = Image.new("L", (120, 100), 0)
    image.paste(255, (0, 0, 60, 100))
    return png(image)


@pytest.fixture(scope="session")
def depth() -> bytes:
    """A depth map: near (white) at the bottom, far (black) at the top."""
    image = Image.linear_gradient("L").resize((120, 100))
    return png(image)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """serve(**KS_env): a real `kandinsky-serve serve` for this test (tiny model, own data dir);
    `key=`: one created in the data dir before, which its probes then need."""
    from tests.server.conftest import start_server

    started: list[Server] = []

    def start(key: str | None = None, **env: str) -> Server:
        server = start_server(tmp_path / "data", key, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
