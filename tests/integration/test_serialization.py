"""Return values leave as JSON by documented rules: datetimes ISO 8601, bytes base64, Decimals strings."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanotypedb import App, Ctx
from nanotypedb.testing import HttpClient, serve

app = App("values")
WHEN = dt.datetime(2026, 11, 28, 12, 30, tzinfo=dt.UTC)


@app.query()
def values(ctx: Ctx) -> dict[str, Any]:
    return {
        "when": WHEN,
        "raw": b"\x00\xffbytes",
        "money": decimal.Decimal("12.345678901234567890"),
        "pair": (1, 2),
        "tags": {"only"},
        "caller": ctx.user.to_dict(),
    }


@app.query()
def takes(ctx: Ctx, when: dt.datetime, amount: decimal.Decimal) -> list[str]:
    return [when.isoformat(), str(amount)]


@pytest.fixture
def alice(tmp_path: Path) -> Iterator[HttpClient]:
    with serve(app, tmp_path / "data") as server:
        yield server.client(server.token("alice"))


def test_return_values_serialize_by_the_documented_rules(alice: HttpClient) -> None:
    data = alice.call("values")
    assert dt.datetime.fromisoformat(data["when"]) == WHEN
    assert base64.b64decode(data["raw"]) == b"\x00\xffbytes"
    assert data["money"] == "12.345678901234567890"  # no precision lost
    assert data["pair"] == [1, 2] and data["tags"] == ["only"]
    assert data["caller"] == {"kind": "user", "id": "alice"}


def test_datetimes_and_decimals_arrive_as_strings(alice: HttpClient) -> None:
    assert alice.call("takes", when="2026-11-28T12:30:00+00:00", amount="1.10") == [
        "2026-11-28T12:30:00+00:00",
        "1.10",
    ]
