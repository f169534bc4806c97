"""The playground in a real Chromium (Debian's, never a downloaded one) against real servers.

Two servers start once per module, side by side: one local server without keys, and one with a
key, which then requires it. Each test gets a fresh browser context (empty localStorage).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.server.conftest import Server, start_server

CHROMIUM = Path(os.environ.get("KS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Servers:
    open: Server  # 127.0.0.1, no keys: needs none
    keyed: Server  # has a key, so it answers 401 without it
    key: str


def create_key(data_dir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "kandinsky_serve", "keys", "create", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "KS_DATA_DIR": str(data_dir)},
    )
    return result.stdout.strip().splitlines()[-1].strip()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    open_dir = tmp_path_factory.mktemp("open") / "data"
    keyed_dir = tmp_path_factory.mktemp("keyed") / "data"
    key = create_key(keyed_dir)
    # each takes seconds to load its model; start them together
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(start_server, open_dir), pool.submit(start_server, keyed_dir, key)]
    failed = next((f.exception() for f in futures if f.exception() is not None), None)
    started = [f.result() for f in futures if f.exception() is None]
    if failed is not None:
        for server in started:
            server.stop()
        raise failed
    yield Servers(started[0], started[1], key)
    for server in started:
        server.stop()


# module, not session: Playwright's sync API keeps an event loop running in the main thread while it
# is open, and later tests that run their own loop (anyio.run) would find it there
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium is not at {CHROMIUM}: the browser tests need it "
            "(apt-get install chromium, or set KS_TEST_CHROMIUM to its path)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context; a JavaScript error on it fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
