"""Optimistic hints: declared once on a mutation, checked at start-up, published by GET /api/functions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from nanotypedb import App, ConfigError, Ctx, Table, optimistic
from nanotypedb.testing import serve


def _app(hint: Any) -> App:
    app = App("hints")

    @app.table
    class Item(Table, table="items"):
        name: str
        size: int = 1

    @app.mutation(name="change", optimistic=hint)
    def change(ctx: Ctx, id: int, name: str) -> None:
        return None

    return app


@pytest.mark.parametrize(
    ("hint", "published"),
    [
        (
            "insert:items",
            {
                "kind": "insert",
                "table": "items",
                "columns": ["id", "name", "size"],
                "defaults": {"size": 1},
                "owner": None,
            },
        ),
        (
            optimistic.update("items", set={"size": 2}),
            {"kind": "update", "table": "items", "id": "id", "columns": ["id", "name", "size"], "set": {"size": 2}},
        ),
        (optimistic.delete("items", id="id"), {"kind": "delete", "table": "items", "id": "id"}),
        ("custom:rename", {"kind": "custom", "name": "rename"}),
        (None, None),
    ],
)
def test_a_hint_is_published_with_what_a_client_needs(tmp_path: Path, hint: Any, published: Any) -> None:
    with serve(_app(hint), tmp_path) as srv:
        headers = {"authorization": f"Bearer {srv.admin_key}"}
        listed = httpx.get(f"{srv.url}/api/functions", headers=headers).json()["functions"]
        assert listed[0]["optimistic"] == published


@pytest.mark.parametrize(
    ("hint", "says"),
    [
        ("insert", "not understood"),
        ("upsert:items", "not understood"),
        (42, "not understood"),
        ("insert:missing", "no declared table 'missing'"),
        (optimistic.update("items", set={"colour": "red"}), "unknown columns ['colour']"),
    ],
)
def test_a_wrong_hint_stops_start_up(tmp_path: Path, hint: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)), serve(_app(hint), tmp_path):
        pass
