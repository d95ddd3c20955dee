"""Fixtures of the browser tests: one headless Chromium for the session, driven through Playwright.

`scripts/test` installs Chromium (Debian's package) and Playwright when they are missing. Without
them these tests fail, so that CI never passes without running them; set
NANOTYPEDB_SKIP_BROWSER=1 to skip them on a machine that cannot install a browser.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _browser import HARNESS, Chromium, Tab

from nanotypedb.testing import TestServer

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    if os.environ.get("NANOTYPEDB_SKIP_BROWSER") == "1":
        pytest.skip("NANOTYPEDB_SKIP_BROWSER=1")
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "no Chromium at /usr/bin/chromium: scripts/test installs it with `apt-get install -y chromium`, "
            "which failed or was not run here"
        )
    if importlib.util.find_spec("playwright") is None:
        pytest.fail("Playwright is not installed: `scripts/install dev` (or `pip install -e '.[dev]'`) installs it")
    browser = Chromium(executable)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def new_page(chromium: Chromium) -> Iterator[Callable[[], Tab]]:
    """`new_page()`: a blank tab in a context of its own; every context is closed after the test."""
    contexts: list[BrowserContext] = []

    def open_() -> Tab:
        context = chromium.new_context()
        contexts.append(context)
        return chromium.new_tab(context)

    yield open_
    for context in contexts:
        chromium.run(context.close())


@pytest.fixture
def open_tab(new_page: Callable[[], Tab]) -> Callable[..., Tab]:
    """`open_tab(server, token, **client_options)`: a tab on the server's origin whose client,
    `h.db`, is signed in with `token` (a user token, or None for anonymous)."""

    def open_(server: TestServer, token: str | None = None, **options: Any) -> Tab:
        tab = new_page()
        # The page's origin is the server's: `import("/client.js")` and fetch need no CORS.
        tab.run(tab.page.goto(f"{server.url}/healthz"))
        tab.js(HARNESS, {"token": token, **options})
        return tab

    return open_
