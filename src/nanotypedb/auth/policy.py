"""Row-level security: per-table rules for read, insert, update and delete, applied inside `ctx.db`.

Declarative rules compile to SQL conditions with bound parameters, so they are
pushed into the query (reads, counts, cursors, updates and deletes alike). A
Python predicate is the escape hatch: it sees each row and the caller, and runs
after the SQL, so prefer declarative rules for large tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PolicyDenied
from ..storage.query import FALSE, TRUE, Condition
from ..storage.schema import quote
from .principal import Principal


class _Caller:
    """Stands for the caller's id inside a rule: `match(owner_id=CALLER)`."""

    def __repr__(self) -> str:
        return "CALLER"


CALLER: Any = _Caller()
RowPredicate = Callable[[Principal, Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """Which rows a caller may touch: a SQL part (`match`) and/or a Python `predicate`."""

    equals: tuple[tuple[str, Any], ...] | None = None  # None: no SQL part (all rows)
    allow: bool = True
    signed_in: bool = False
    predicate: RowPredicate | None = None

    def condition(self, principal: Principal) -> Condition:
        """The SQL condition that selects the rows this caller may see (FALSE: none)."""
        if not self.allow or (self.signed_in and principal.is_anonymous):
            return FALSE
        if not self.equals:
            return TRUE
        parts, params, eq = [], [], None
        for col, want in self.equals:
            value = principal.id if want is CALLER else want
            if value is None:
                return FALSE  # an anonymous caller owns nothing
            parts.append(f"{quote(col)} = ?")
            params.append(value)
            eq = (col, value) if len(self.equals) == 1 else None
        return Condition(" AND ".join(parts), tuple(params), eq, frozenset(col for col, _ in self.equals))

    def allows_row(self, principal: Principal, row: Mapping[str, Any]) -> bool:
        """The same rule checked against one row in Python (for new values on insert and update)."""
        if not self.allow or (self.signed_in and principal.is_anonymous):
            return False
        for col, want in self.equals or ():
            value = principal.id if want is CALLER else want
            if value is None or row.get(col) != value:
                return False
        return self.predicate is None or self.predicate(principal, row)


ALLOW = Rule()
DENY = Rule(allow=False)
SIGNED_IN = Rule(signed_in=True)


def match(**equals: Any) -> Rule:
    """Rows whose columns equal the given values; `CALLER` stands for the caller's id."""
    return Rule(tuple(sorted(equals.items())), signed_in=True)


def predicate(fn: RowPredicate, *, signed_in: bool = True) -> Rule:
    """A Python check per row, for what a `match` cannot say."""
    return Rule(None, signed_in=signed_in, predicate=fn)


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules of one table. `owner` names a column set from the caller on insert and never changed."""

    read: Rule = DENY
    insert: Rule = DENY
    update: Rule = DENY
    delete: Rule = DENY
    owner: str | None = None

    def prepare_insert(self, principal: Principal, values: dict[str, Any]) -> dict[str, Any]:
        """Set the owner column from the caller (whatever the client sent), then check the rule."""
        if self.owner is not None:
            values = {**values, self.owner: principal.id}
        if not self.insert.allows_row(principal, values):
            raise PolicyDenied("The table's insert policy refused this row.")
        return values

    def check_update(self, principal: Principal, before: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        if self.owner is not None and self.owner in changes and changes[self.owner] != before.get(self.owner):
            raise PolicyDenied(f"The owner column {self.owner!r} cannot be changed.")
        if not self.update.allows_row(principal, {**before, **changes}):
            raise PolicyDenied("The table's update policy refused the new values.")


def owner_policy(column: str = "owner_id") -> Policy:
    """Each signed-in user reads and writes only the rows whose `column` is their id."""
    mine = match(**{column: CALLER})
    return Policy(read=mine, insert=mine, update=mine, delete=mine, owner=column)


def public_read_policy(write: Rule = DENY) -> Policy:
    """Anyone may read; writes follow `write` (admins only by default)."""
    return Policy(read=ALLOW, insert=write, update=write, delete=write)
