"""A page on another origin uses the browser client of a server that lists its origin in
`--cors-origins`, in real Chromium; without the setting the browser refuses it the module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from _browser import Tab

from nanotypedb.demo.tasks import app
from nanotypedb.testing import serve

# The page imports the client from the API server, fetches its function list (for optimistic
# hints) and runs a mutation over the WebSocket: every cross-origin step a web app takes.
FROM_ANOTHER_ORIGIN = """async ({api, token}) => {
  try {
    const mod = await import(`${api}/client.js`);
    // The authorization header makes the browser send a preflight first.
    const headers = {authorization: `Bearer ${token}`};
    const functions = await fetch(`${api}/api/functions`, {headers}).then((r) => r.json());
    const db = mod.createClient({url: api, token});
    try {
      const row = await db.performMutation("createTask", {title: "from another origin"});
      return {ok: true, row, hinted: functions.functions.some((f) => f.name === "createTask")};
    } finally {
      db.close();
    }
  } catch (err) {
    return {ok: false, error: String(err)};
  }
}"""


def test_a_listed_origin_imports_the_client_and_writes(tmp_path: Path, new_page: Callable[[], Tab]) -> None:
    with serve(app, tmp_path / "site") as site, serve(app, tmp_path / "api", cors_origins=site.url) as api:
        tab = new_page()
        tab.run(tab.page.goto(f"{site.url}/healthz"))
        done = tab.js(FROM_ANOTHER_ORIGIN, {"api": api.url, "token": api.token("alice")})
        assert done["ok"], done
        assert done["row"]["title"] == "from another origin" and done["row"]["owner_id"] == "alice"
        assert done["hinted"]
        assert api.client(api.token("alice")).call("listTasks")[0]["title"] == "from another origin"


def test_without_cors_origins_the_browser_refuses_another_origin(tmp_path: Path, new_page: Callable[[], Tab]) -> None:
    with serve(app, tmp_path / "site") as site, serve(app, tmp_path / "api") as api:
        tab = new_page()
        tab.run(tab.page.goto(f"{site.url}/healthz"))
        done = tab.js(FROM_ANOTHER_ORIGIN, {"api": api.url, "token": api.token("alice")})
        assert not done["ok"]
        assert "module" in done["error"].lower() or "fetch" in done["error"].lower()
