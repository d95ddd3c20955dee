"""The complete example of docs/browser-client.md works as written, in Chromium."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from _browser import Tab

from nanotypedb.testing import TestServer

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "browser-client.md").read_text(encoding="utf-8")


def example_html() -> str:
    blocks = re.findall(r"^```html\n(.*?)^```", PAGE, flags=re.M | re.S)
    return next(block for block in blocks if block.startswith("<!doctype html>"))


def test_the_task_list_example(server: TestServer, new_page: Callable[[], Tab]) -> None:
    token = server.token("alice")
    server.client(token).call("createTask", title="Already there")
    tab = new_page()
    page = tab.page
    # The page as if served from the server's origin, with the token in its fragment.
    tab.run(page.goto(f"{server.url}/healthz#token={token}"))
    tab.run(page.set_content(example_html()))
    tab.wait("() => document.getElementById('status').textContent === 'open'")
    tab.run(page.locator("li", has_text="Already there").wait_for())

    tab.run(page.fill("#title", "Written in the page"))
    tab.run(page.click("#add button"))
    task = page.locator("li:not(.saving)", has_text="Written in the page")
    tab.run(task.wait_for())
    assert tab.run(page.locator("li span").all_text_contents()) == ["Written in the page", "Already there"]
    assert server.client(token).call("listTasks")[0]["title"] == "Written in the page"

    tab.run(task.get_by_role("button", name="Done").click())
    tab.run(page.locator("li.completed", has_text="Written in the page").wait_for())
    tab.run(task.get_by_role("button", name="Delete").click())
    tab.run(task.wait_for(state="detached"))
    assert tab.run(page.locator("li span").all_text_contents()) == ["Already there"]
    assert [t["title"] for t in server.client(token).call("listTasks")] == ["Already there"]
    assert tab.run(page.text_content("#error")) == ""
    assert tab.console_errors == []
