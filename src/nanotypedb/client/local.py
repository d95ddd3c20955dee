"""Local state: the pending optimistic mutations, and what each subscription shows with them applied on top."""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import optimistic

log = logging.getLogger(__name__)


class Query(Protocol):
    """What local state needs of a subscription: which query it is, and the server's last result."""

    @property
    def name(self) -> str: ...
    @property
    def args(self) -> dict[str, Any]: ...
    @property
    def data(self) -> Any: ...
    @property
    def reads(self) -> list[dict[str, Any]]: ...


class Store:
    """What a custom optimistic function sees: the current value of each subscribed query, by name and arguments."""

    def __init__(self, queries: Mapping[Any, Query], views: dict[Any, Any]) -> None:
        self._queries = queries
        self._views = views

    def get_query(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        """A copy of the query's current value (edit it freely), or None when no subscription holds it."""
        key = next(iter(self._keys(name, args)), None)
        return None if key is None else copy.deepcopy(self._views[key])

    def set_query(self, name: str, args: Mapping[str, Any] | None, data: Any) -> None:
        """Show `data` as the value of every subscription to that query (until the mutation ends)."""
        for key in self._keys(name, args):
            self._views[key] = copy.deepcopy(data)

    def _keys(self, name: str, args: Mapping[str, Any] | None) -> Iterable[Any]:
        wanted = dict(args or {})
        return [k for k, q in self._queries.items() if q.name == name and optimistic.same(q.args, wanted)]


CustomUpdate = Callable[[Store, dict[str, Any]], None]


@dataclass(eq=False)
class Pending:
    """One mutation sent and not yet dropped: its declaration and, once the server answered, its result."""

    name: str
    args: dict[str, Any]
    spec: dict[str, Any]
    temp_id: str
    user_id: str | None
    custom: CustomUpdate | None = None
    version: int | None = None  # the commit's version, once the server answered
    result: Any = field(default=None, repr=False)

    def row(self) -> dict[str, Any]:
        """An insert's row: the server's, once it answered with one (the real id shows at once), else the guess."""
        if self.version is not None and isinstance(self.result, dict):
            return self.result
        return optimistic.insert_row(self.spec, self.args, self.temp_id, self.user_id)

    def apply(self, queries: Mapping[Any, Query], views: dict[Any, Any]) -> None:
        try:
            self._apply(queries, views)
        except Exception:
            # A bug (the application's custom update, say) must not stop the other effects: this one shows none.
            log.exception("The optimistic update of %r raised; it is skipped", self.name)

    def _apply(self, queries: Mapping[Any, Query], views: dict[Any, Any]) -> None:
        if self.custom is not None:
            trial = dict(views)  # all or nothing: a function that raises halfway leaves no half effect
            self.custom(Store(queries, trial), copy.deepcopy(self.args))
            views.update(trial)
            return
        row = self.row() if self.spec.get("kind") == "insert" else None
        updated = {
            key: optimistic.apply(views[key], q.reads, q.args, self.spec, self.args, row) for key, q in queries.items()
        }
        views.update(updated)  # all or nothing


class LocalState:
    """Pending mutations, oldest first; each is dropped on its own (answered and seen, refused, or lost)."""

    def __init__(self) -> None:
        self.pending: list[Pending] = []
        self._numbers = itertools.count(1)

    def add(
        self,
        name: str,
        args: dict[str, Any],
        spec: dict[str, Any],
        user_id: str | None,
        custom: CustomUpdate | None = None,
    ) -> Pending:
        mutation = Pending(name, args, spec, optimistic.temp_id(next(self._numbers)), user_id, custom)
        self.pending.append(mutation)
        return mutation

    def confirm(self, mutation: Pending, result: Any, version: int, seen: int) -> None:
        """The server answered: keep the effect (with the real row) until a transition at ≥ `version` shows it."""
        mutation.result, mutation.version = result, version
        if version <= seen:
            self.remove(mutation)

    def remove(self, mutation: Pending) -> None:
        if mutation in self.pending:
            self.pending.remove(mutation)

    def drop_seen(self, seen: int) -> None:
        """Drop every answered mutation that the subscriptions now include (their version is ≤ `seen`)."""
        self.pending = [m for m in self.pending if m.version is None or m.version > seen]

    def views(self, queries: Mapping[Any, Query]) -> dict[Any, Any]:
        """Each query's data with every pending mutation applied, oldest first."""
        views = {key: query.data for key, query in queries.items()}
        for mutation in self.pending:
            mutation.apply(queries, views)
        return views
