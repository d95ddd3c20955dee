"""The machinery of the browser tests: Chromium on a thread of its own, and tabs with the client loaded.

Playwright's sync API runs its event loop in a greenlet of the main thread, and while it is alive
asyncio believes a loop is running there: every later test that calls `asyncio.run` would fail.
So the browser is driven with the async API on an event loop in another thread, and each call
from a test waits for its result there.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright

T = TypeVar("T")
HARNESS = (Path(__file__).parent / "harness.js").read_text(encoding="utf-8")
TIMEOUT_MS = 10_000
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


class Chromium:
    """One headless Chromium, driven from an event loop on a thread of its own."""

    def __init__(self, executable: str) -> None:
        from playwright.async_api import async_playwright

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="playwright", daemon=True)
        self.thread.start()
        self.playwright: Playwright = self.run(async_playwright().start())
        try:
            self.browser: Browser = self.run(
                self.playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            )
        except BaseException:
            self.stop_loop()
            raise

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a Playwright coroutine on the browser's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=3 * TIMEOUT_MS / 1000)

    def new_context(self) -> BrowserContext:
        return self.run(self.browser.new_context())

    def new_tab(self, context: BrowserContext) -> Tab:
        """A blank page of `context`. Everything that touches Playwright runs on the browser's loop,
        even its synchronous methods (`on`, `set_default_timeout`): they send messages too."""

        async def open_page() -> Tab:
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            return Tab(self, page)

        return self.run(open_page())

    def close(self) -> None:
        try:
            self.run(self.browser.close())
        finally:
            self.stop_loop()

    def stop_loop(self) -> None:
        try:
            self.run(self.playwright.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


class Tab:
    """A page with, once loaded, the client as `h.db` (see harness.js). Made on the browser's loop."""

    def __init__(self, chromium: Chromium, page: Page) -> None:
        self.chromium = chromium
        self.page = page
        self.console_errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.console_errors.append(str(exc)))

    def _console(self, message: ConsoleMessage) -> None:
        # The browser asks for /favicon.ico, which the server does not have: not the client's error.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            self.console_errors.append(message.text)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a call of the page's async API, `tab.run(tab.page.click("button"))`."""
        return self.chromium.run(coroutine)

    def js(self, expression: str, arg: Any = None) -> Any:
        """Evaluate a JavaScript function of one argument, `(arg) => …`, awaiting a returned Promise."""
        return self.run(self.page.evaluate(expression, arg))

    def wait(self, predicate: str, arg: Any = None) -> Any:
        """Wait until `(arg) => …` is truthy in the page; returns its value."""

        async def waited() -> Any:
            handle = await self.page.wait_for_function(predicate, arg=arg, timeout=TIMEOUT_MS)
            return await handle.json_value()

        return self.run(waited())

    def watch(self, label: str, name: str, args: dict[str, Any] | None = None) -> None:
        self.js("([label, name, args]) => h.watch(label, name, args)", [label, name, args or {}])

    def results(self, label: str) -> list[Any]:
        values: list[Any] = self.js("(label) => h.results[label]", label)
        return values

    def wait_result(self, label: str, predicate: str) -> Any:
        """Wait until the last value `label` received satisfies `(value) => …`; returns that value."""
        return self.wait(
            f"(label) => {{ const v = h.last(label); return v !== undefined && ({predicate})(v) ? {{v}} : null }}",
            label,
        )["v"]

    def settle(self, call: str, arg: Any = None) -> dict[str, Any]:
        """Run `(arg) => promise` and return `{ok, value}` or `{ok: false, error: {code, message, …}}`."""
        settled: dict[str, Any] = self.js(f"(arg) => h.settle(({call})(arg))", arg)
        return settled
