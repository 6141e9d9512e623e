"""Browser tests: the widget and the console in Debian's Chromium, driven by Playwright.

chatd runs in the test's own event loop (the ``chatd_factory`` fixture), so Playwright's
async API is used: the browser talks to a real server on 127.0.0.1 while the test awaits.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.browser.ticketing import Ticketing

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "static"

try:
    from playwright.async_api import Browser, async_playwright
except ImportError:  # `make test` installs it; a bare pytest run may not have it
    async_playwright = None  # type: ignore[assignment]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = []
    if async_playwright is None:
        missing.append("Playwright for Python")
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        missing.append(CHROMIUM)
    if not (STATIC / "widget.js").is_file() or not (STATIC / "console" / "console.js").is_file():
        missing.append("the built web assets (static/widget.js, static/console/)")
    if not missing:
        return
    skip = pytest.mark.skip(reason="needs " + ", ".join(missing) + ": run `make test`")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert async_playwright is not None
    async with async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def ticketing(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Ticketing:
    t = Ticketing()
    app = web.Application()
    app.router.add_post("/hook", t.hook)
    server = await aiohttp_server(app)
    t.url = str(server.make_url("/hook"))
    return t


@pytest.fixture
def artifacts() -> Path:
    """Screenshots for people to look at (git-ignored)."""
    path = ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
