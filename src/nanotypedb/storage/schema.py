"""Tables declared as Python classes: typed columns, defaults and indexes, turned into SQLite DDL.

A column's Python type decides how it is stored: str → TEXT, int → INTEGER,
float → REAL, bool → INTEGER 0/1, bytes → BLOB, datetime → ISO 8601 TEXT,
Literal[...] → TEXT or INTEGER with the allowed values checked on write,
dict / list → JSON TEXT. `X | None` makes a column nullable. Every table has
an integer primary key `id`.
"""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args, get_origin

import orjson

from ..errors import SchemaError, ValidationFailed

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

ColumnKind = Literal["str", "int", "float", "bool", "bytes", "datetime", "json"]
_SQL_TYPES: dict[str, str] = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "REAL",
    "bool": "INTEGER",
    "bytes": "BLOB",
    "datetime": "TEXT",
    "json": "TEXT",
}
_PY_KINDS: dict[Any, ColumnKind] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    bytes: "bytes",
    dt.datetime: "datetime",
    dict: "json",
    list: "json",
}


def check_name(name: str, what: str = "name") -> str:
    """Identifiers are spliced into SQL, so only plain names are allowed."""
    # fullmatch: `$` in a plain match would also accept a name ending in a newline.
    if not _NAME.fullmatch(name):
        raise SchemaError(f"{what} {name!r} must be letters, digits and underscores.")
    return name


def quote(name: str) -> str:
    return f'"{check_name(name)}"'


@dataclass(frozen=True, slots=True)
class ColumnOptions:
    """What `column()` returns: options that a plain default cannot say."""

    default: Any = MISSING
    default_factory: Callable[[], Any] | None = None
    index: bool = False
    unique: bool = False


def column(
    default: Any = MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    index: bool = False,
    unique: bool = False,
) -> Any:
    """Declare a column with a default factory, an index or a unique constraint."""
    return ColumnOptions(default, default_factory, index, unique)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: ColumnKind
    nullable: bool = False
    default: Any = MISSING
    default_factory: Callable[[], Any] | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def sql_type(self) -> str:
        return _SQL_TYPES[self.kind]

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING or self.default_factory is not None or self.nullable

    def ddl(self) -> str:
        parts = [quote(self.name), self.sql_type]
        if not self.nullable:
            parts.append("NOT NULL")
        constant = self.default if self.default is not MISSING else None
        if constant is not None and isinstance(constant, str | int | float | bool):
            parts.append(f"DEFAULT {_sql_literal(constant)}")
        return " ".join(parts)

    def make_default(self) -> Any:
        if self.default_factory is not None:
            return self.default_factory()
        return None if self.default is MISSING else self.default

    def to_sql(self, value: Any) -> Any:
        """Check a Python value against the column and convert it for SQLite."""
        if value is None:
            if not self.nullable:
                raise _invalid(self.name, "must not be null")
            return None
        if self.choices is not None and value not in self.choices:
            raise _invalid(self.name, f"must be one of {list(self.choices)}")
        return _ENCODERS[self.kind](self.name, value)

    def from_sql(self, value: Any) -> Any:
        if value is None:
            return None
        decoder = _DECODERS.get(self.kind)
        return decoder(value) if decoder else value


def _sql_literal(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + value.replace("'", "''") + "'"


def _invalid(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"Column {name!r} {message}.", details=[{"field": name, "message": message}])


def _expect(types_: type | tuple[type, ...], what: str) -> Callable[[str, Any], Any]:
    def encode(name: str, value: Any) -> Any:
        if isinstance(value, bool) and bool not in _as_tuple(types_):
            raise _invalid(name, f"must be {what}, not a boolean")
        if not isinstance(value, types_):
            raise _invalid(name, f"must be {what}, not {type(value).__name__}")
        return value

    return encode


def _as_tuple(types_: type | tuple[type, ...]) -> tuple[type, ...]:
    return types_ if isinstance(types_, tuple) else (types_,)


def _encode_bool(name: str, value: Any) -> int:
    if not isinstance(value, bool):
        raise _invalid(name, f"must be a boolean, not {type(value).__name__}")
    return int(value)


def _encode_datetime(name: str, value: Any) -> str:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _invalid(name, "must be an ISO 8601 date-time") from None
    if not isinstance(value, dt.datetime):
        raise _invalid(name, f"must be a datetime, not {type(value).__name__}")
    return value.isoformat()


def _encode_json(name: str, value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        raise _invalid(name, "must be JSON-serializable") from None


_ENCODERS: dict[str, Callable[[str, Any], Any]] = {
    "str": _expect(str, "a string"),
    "int": _expect(int, "an integer"),
    "float": _expect((int, float), "a number"),
    "bool": _encode_bool,
    "bytes": _expect(bytes, "bytes"),
    "datetime": _encode_datetime,
    "json": _encode_json,
}
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "bool": bool,
    "datetime": dt.datetime.fromisoformat,
    "json": orjson.loads,
}


@dataclass(frozen=True, slots=True)
class Index:
    columns: tuple[str, ...]
    unique: bool = False

    def name(self, table: str) -> str:
        prefix = "ux" if self.unique else "ix"
        return f"{prefix}_{table}_{'_'.join(self.columns)}"

    def ddl(self, table: str) -> str:
        unique = "UNIQUE " if self.unique else ""
        cols = ", ".join(quote(c) for c in self.columns)
        return f"CREATE {unique}INDEX IF NOT EXISTS {quote(self.name(table))} ON {quote(table)} ({cols})"


@dataclass(slots=True)
class TableSchema:
    """A table as declared: its columns (without `id`), indexes and the policy attached to it."""

    name: str
    columns: dict[str, Column]
    indexes: tuple[Index, ...] = ()
    policy: Any = None
    model: type | None = None
    options: dict[str, Any] = field(default_factory=dict)
    _decoders: dict[tuple[str, ...], list[tuple[str, Callable[[Any], Any]]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def ddl(self) -> list[str]:
        cols = ", ".join(['"id" INTEGER PRIMARY KEY', *(c.ddl() for c in self.columns.values())])
        create = f"CREATE TABLE IF NOT EXISTS {quote(self.name)} ({cols})"
        return [create, *(i.ddl(self.name) for i in self.indexes)]

    def column(self, name: str) -> Column:
        col = self.columns.get(name)
        if col is None:
            raise ValidationFailed(
                f"Table {self.name!r} has no column {name!r}.",
                details=[{"field": name, "message": "unknown column"}],
            )
        return col

    def has_column(self, name: str) -> bool:
        return name == "id" or name in self.columns

    def encode_insert(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults, check every value and convert the row for SQLite."""
        self._reject_unknown(values)
        row: dict[str, Any] = {}
        for name, col in self.columns.items():
            if name in values:
                row[name] = col.to_sql(values[name])
            elif col.has_default:
                row[name] = col.to_sql(col.make_default())
            else:
                raise _invalid(name, "is required")
        return row

    def encode_update(self, values: Mapping[str, Any]) -> dict[str, Any]:
        self._reject_unknown(values)
        if "id" in values:
            raise _invalid("id", "cannot be changed")
        return {name: self.columns[name].to_sql(v) for name, v in values.items()}

    def decoders(self, names: tuple[str, ...]) -> list[tuple[str, Callable[[Any], Any]]]:
        """(column, decoder) for each column of a result that SQLite cannot return as Python wants it."""
        cached = self._decoders.get(names)
        if cached is None:
            cached = [
                (n, _DECODERS[self.columns[n].kind])
                for n in names
                if n in self.columns and self.columns[n].kind in _DECODERS
            ]
            self._decoders[names] = cached
        return cached

    def decode(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in row.items():
            col = self.columns.get(key)
            out[key] = col.from_sql(value) if col is not None else value
        return out

    def _reject_unknown(self, values: Iterable[str]) -> None:
        unknown = [k for k in values if k != "id" and k not in self.columns]
        if unknown:
            raise ValidationFailed(
                f"Table {self.name!r} has no column {unknown[0]!r}.",
                details=[{"field": k, "message": "unknown column"} for k in unknown],
            )


def column_from_annotation(name: str, annotation: Any, default: Any) -> tuple[Column, bool, bool]:
    """Build a Column from a type hint and its class attribute; returns (column, index, unique)."""
    opts = default if isinstance(default, ColumnOptions) else ColumnOptions(default)
    nullable, base = _unwrap_optional(annotation)
    choices: tuple[Any, ...] | None = None
    if get_origin(base) is Literal:
        choices = get_args(base)
        base = type(choices[0])
    kind = _PY_KINDS.get(get_origin(base) or base)
    if kind is None:
        raise SchemaError(f"Column {name!r} has a type NanoTypeDB cannot store: {annotation!r}.")
    col = Column(name, kind, nullable, opts.default, opts.default_factory, choices)
    return col, opts.index, opts.unique


def _unwrap_optional(annotation: Any) -> tuple[bool, Any]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return True, args[0]
        raise SchemaError(f"Union types other than `X | None` cannot be stored: {annotation!r}.")
    return False, annotation


class Table:
    """Base class for declared tables: `class Task(Table, table="tasks", policy=...)`."""

    __schema__: ClassVar[TableSchema]

    def __init_subclass__(
        cls,
        *,
        table: str | None = None,
        policy: Any = None,
        indexes: Iterable[Iterable[str]] = (),
        **options: Any,
    ) -> None:
        super().__init_subclass__()
        name = check_name(table or cls.__name__.lower(), "table name")
        if name.startswith("_"):
            raise SchemaError(f"Table {name!r}: names starting with '_' are reserved for the system.")
        if name.lower().startswith("sqlite_"):
            raise SchemaError(f"Table {name!r}: names starting with 'sqlite_' are reserved by SQLite.")
        hints = typing.get_type_hints(cls)
        columns: dict[str, Column] = {}
        idx: list[Index] = [Index(tuple(check_name(c) for c in cols)) for cols in indexes]
        for col_name, hint in hints.items():
            if col_name.startswith("__") or get_origin(hint) is ClassVar:
                continue
            if col_name == "id":
                continue
            check_name(col_name, "column name")
            col, index, unique = column_from_annotation(col_name, hint, cls.__dict__.get(col_name, MISSING))
            columns[col_name] = col
            if index or unique:
                idx.append(Index((col_name,), unique))
        _check_index_columns(name, idx, columns)
        cls.__schema__ = TableSchema(name, columns, tuple(idx), policy, cls, dict(options))


def _check_index_columns(table: str, indexes: Iterable[Index], columns: Mapping[str, Column]) -> None:
    """An index over a column the class does not declare would fail only at start-up, in SQLite's words."""
    for index in indexes:
        unknown = [c for c in index.columns if c != "id" and c not in columns]
        if unknown:
            raise SchemaError(f"Table {table!r}: the index on {index.columns} names unknown column {unknown[0]!r}.")
