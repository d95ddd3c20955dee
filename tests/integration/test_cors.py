"""CORS (`--cors-origins`): the listed origins' pages may call the HTTP API; others, and every
origin when the setting is empty, get no CORS header, so browsers keep their reads from them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nanotypedb.demo.tasks import app
from nanotypedb.errors import ConfigError
from nanotypedb.testing import TestServer, serve

APP_ORIGIN = "http://localhost:5173"


@pytest.fixture
def cors(tmp_path: Path) -> Iterator[TestServer]:
    with serve(app, tmp_path / "data", cors_origins=f"{APP_ORIGIN}, https://app.example.com") as server:
        yield server


def preflight(server: TestServer, origin: str) -> httpx.Response:
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    return httpx.options(f"{server.url}/api/rpc/createTask", headers=headers, timeout=10)


def test_a_listed_origin_passes_the_preflight_and_reads_the_answer(cors: TestServer) -> None:
    answer = preflight(cors, APP_ORIGIN)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in answer.headers  # bearer tokens, never cookies
    headers = {"origin": APP_ORIGIN, "authorization": f"Bearer {cors.token('alice')}"}
    call = httpx.post(f"{cors.url}/api/rpc/createTask", json={"title": "from the app"}, headers=headers, timeout=10)
    assert call.status_code == 200
    assert call.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "x-request-id" in call.headers["access-control-expose-headers"]


def test_an_origin_not_listed_gets_no_cors_header(cors: TestServer) -> None:
    answer = preflight(cors, "https://elsewhere.example")
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
    call = httpx.get(f"{cors.url}/api/functions", headers={"origin": "https://elsewhere.example"}, timeout=10)
    assert "access-control-allow-origin" not in call.headers


def test_without_the_setting_no_origin_gets_a_cors_header(tmp_path: Path) -> None:
    with serve(app, tmp_path / "data") as server:
        assert "access-control-allow-origin" not in preflight(server, APP_ORIGIN).headers
        call = httpx.get(f"{server.url}/api/functions", headers={"origin": APP_ORIGIN}, timeout=10)
        assert "access-control-allow-origin" not in call.headers


@pytest.mark.parametrize(
    "value", ["localhost:5173", "http://localhost:5173/app", "ftp://files.example", "*, http://localhost:5173"]
)
def test_a_value_that_is_not_a_list_of_origins_refuses_to_start(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="--cors-origins"):
        TestServer(app, tmp_path / "data", cors_origins=value).start()
    assert not (tmp_path / "data").exists()  # refused before anything was opened
