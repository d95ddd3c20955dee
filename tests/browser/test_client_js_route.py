"""GET /client.js: the browser client as the server sends it (no browser needed)."""

from __future__ import annotations

from pathlib import Path

from nanotypedb.server import http
from nanotypedb.testing import TestServer

SOURCE = Path(__file__).resolve().parents[2] / "src" / "nanotypedb" / "web" / "client.js"


def test_client_js_is_served_as_a_javascript_module_that_browsers_revalidate(server: TestServer) -> None:
    client = server.client().http
    response = client.get("/client.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == SOURCE.read_bytes()
    assert "export function createClient" in response.text
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')

    again = client.get("/client.js", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get("/client.js", headers={"if-none-match": '"other"'}).status_code == 200
    head = client.head("/client.js")
    assert head.status_code == 200 and head.content == b""
    assert client.post("/client.js").json()["error"]["code"] == "MethodNotAllowed"


def test_client_js_lives_inside_the_package() -> None:
    # hatch's wheel takes the whole src/nanotypedb folder, so the module ships with the server.
    assert SOURCE.parent == http.WEB_DIR
    assert (http.WEB_DIR / "client.js").is_file()
