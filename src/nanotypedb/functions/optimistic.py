"""Optimistic hints: how a mutation changes data, published so that clients show it before the server answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError
from ..storage.schema import MISSING, TableSchema
from . import embedding

Kind = Literal["insert", "update", "delete", "custom"]
_KINDS = ("insert", "update", "delete", "custom")


@dataclass(frozen=True, slots=True)
class Optimistic:
    """Insert a row into `table`, update or delete the row whose id is the argument `id`,
    or run the client-side function registered as `name`."""

    kind: Kind
    table: str | None = None
    id: str = "id"
    set: Mapping[str, Any] | None = None
    name: str | None = None

    def publish(self, tables: Mapping[str, TableSchema]) -> dict[str, Any]:
        """The hint as `GET /api/functions` shows it: with what a client needs to build the row."""
        if self.kind == "custom":
            return {"kind": "custom", "name": self.name}
        schema = tables[self.table or ""]
        if self.kind == "delete":
            return {"kind": "delete", "table": schema.name, "id": self.id}
        columns = ["id", *schema.columns]
        if self.kind == "update":
            changes = dict(self.set or {})
            return {"kind": "update", "table": schema.name, "id": self.id, "columns": columns, "set": changes}
        defaults = {
            name: (None if col.default is MISSING else col.default)
            for name, col in schema.columns.items()
            if col.default_factory is None and (col.nullable or col.default is not MISSING)
        }
        if embedding.columns(schema):
            defaults[embedding.STATUS] = "pending"  # what the server sets on insert, until the vector is stored
        owner = getattr(schema.policy, "owner", None)
        return {"kind": "insert", "table": schema.name, "columns": columns, "defaults": defaults, "owner": owner}

    def check(self, function: str, tables: Mapping[str, TableSchema]) -> None:
        if self.kind != "custom" and self.table not in tables:
            raise ConfigError(f"Mutation {function!r}: its optimistic hint names no declared table {self.table!r}.")
        if self.kind == "update" and self.set:
            unknown = sorted(set(self.set) - set(tables[self.table or ""].columns))
            if unknown:
                raise ConfigError(f"Mutation {function!r}: its optimistic `set` names unknown columns {unknown}.")


def insert(table: str) -> Optimistic:
    return Optimistic("insert", table)


def update(table: str, *, id: str = "id", set: Mapping[str, Any] | None = None) -> Optimistic:
    return Optimistic("update", table, id, dict(set or {}))


def delete(table: str, *, id: str = "id") -> Optimistic:
    return Optimistic("delete", table, id)


def custom(name: str) -> Optimistic:
    return Optimistic("custom", name=name)


def parse(value: Optimistic | str | None, function: str) -> Optimistic | None:
    """`"insert:tasks"`, `"update:tasks"`, `"delete:tasks"`, `"custom:name"`, an Optimistic, or None."""
    if value is None or isinstance(value, Optimistic):
        return value
    kind, _, target = value.partition(":") if isinstance(value, str) else ("", "", "")
    if kind not in _KINDS or not target:
        raise ConfigError(
            f"Mutation {function!r}: optimistic={value!r} is not understood; write "
            "'insert:TABLE', 'update:TABLE', 'delete:TABLE', 'custom:NAME', or use nanotypedb.optimistic."
        )
    return custom(target) if kind == "custom" else Optimistic(kind, target)  # type: ignore[arg-type]
