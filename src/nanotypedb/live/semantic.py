"""Semantic subscriptions: push each new or edited row whose meaning is close to a description.

The description is embedded once, when the subscription starts. Each time a row of the
topic's table gets its vector (after an insert, or an edit of its embedded columns), the
row is scored against every semantic subscription on that table, and sent to those whose
threshold it reaches and whose caller may read it (row-level security, checked by reading
the row as that caller).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import protocol
from ..auth.principal import Principal
from ..errors import MalformedMessage, RateLimited, ValidationFailed
from ..functions.db import Db
from ..storage.engine import SqliteEngine

log = logging.getLogger(__name__)
Send = Callable[[bytes], Coroutine[Any, Any, None]]
Embed = Callable[[list[str]], Awaitable[npt.NDArray[np.float32]]]
MAX_DESCRIPTION = 2000


@dataclass(slots=True)
class SemanticSub:
    sub_id: Any
    principal: Principal
    table: str
    vector: npt.NDArray[np.float32]  # unit length
    threshold: float
    send: Send


class SemanticHub:
    """Every semantic subscription, by table; `indexed` is the embeddings' listener."""

    def __init__(self, engine: SqliteEngine, embed: Embed | None, tables: set[str], max_per_connection: int) -> None:
        self.engine = engine
        self.embed = embed
        self.tables = tables
        self.max_per_connection = max_per_connection
        self.pushed = 0
        self._by_table: dict[str, dict[tuple[Hashable, Any], SemanticSub]] = {}
        self._by_connection: dict[Hashable, dict[Any, SemanticSub]] = {}

    async def subscribe(
        self,
        connection: Hashable,
        sub_id: Any,
        principal: Principal,
        topic: Any,
        description: Any,
        threshold: Any,
        send: Send,
        held: int,
    ) -> None:
        """Start a subscription once its description is embedded; `held`: the connection's other subscriptions."""
        _check(topic, description, threshold)
        mine = self._by_connection.setdefault(connection, {})
        if sub_id in mine:
            raise MalformedMessage(f"Subscription {sub_id!r} already exists on this connection; unsubscribe first.")
        if held + len(mine) >= self.max_per_connection:
            raise RateLimited(f"This connection already holds {held + len(mine)} subscriptions.", retry_after=1.0)
        if self.embed is None or topic not in self.tables:
            raise ValidationFailed(
                f"{topic!r} is not an embedded table this server embeds; topics: {sorted(self.tables) or 'none'}."
            )
        vector = (await self.embed([description]))[0]
        sub = SemanticSub(sub_id, principal, topic, vector, float(threshold), send)
        mine[sub_id] = sub
        self._by_table.setdefault(topic, {})[(connection, sub_id)] = sub

    def unsubscribe(self, connection: Hashable, sub_id: Any) -> bool:
        sub = self._by_connection.get(connection, {}).pop(sub_id, None)
        if sub is None:
            return False
        self._by_table.get(sub.table, {}).pop((connection, sub_id), None)
        return True

    def drop(self, connection: Hashable) -> None:
        for sub_id in list(self._by_connection.get(connection, {})):
            self.unsubscribe(connection, sub_id)
        self._by_connection.pop(connection, None)

    def count(self, connection: Hashable) -> int:
        return len(self._by_connection.get(connection, {}))

    def indexed(self, table: str, row_id: int, vector: npt.NDArray[np.float32]) -> None:
        """A row of `table` got its vector: send it to the subscriptions it matches."""
        subs = list(self._by_table.get(table, {}).values())
        if not subs:
            return
        unit = vector / (np.linalg.norm(vector) or np.float32(1.0))
        for sub in subs:
            score = float(np.dot(sub.vector, unit))
            if score < sub.threshold:
                continue
            read = self.engine.read_sync(_reader(sub.principal, table, row_id))
            if read.value is None:
                continue  # the caller may not read this row
            message = {"type": protocol.SEMANTIC, "id": sub.sub_id, "data": {**read.value, "_score": round(score, 6)}}
            message["version"] = read.version
            self.pushed += 1
            asyncio.get_running_loop().create_task(sub.send(protocol.dumps(message)))


def _reader(principal: Principal, table: str, row_id: int) -> Callable[[Any], dict[str, Any] | None]:
    """Read the row as the subscriber: None when row-level security hides it from them."""
    return lambda tx: Db(tx, principal).get(table, row_id)


def _check(topic: Any, description: Any, threshold: Any) -> None:
    if not isinstance(topic, str) or not topic:
        raise MalformedMessage("A subscribeSemantic message needs a `topic`: the name of an embedded table.")
    if not isinstance(description, str) or not description.strip() or len(description) > MAX_DESCRIPTION:
        raise ValidationFailed(f"`description` must be a non-empty string of at most {MAX_DESCRIPTION} characters.")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not -1.0 <= threshold <= 1.0:
        raise ValidationFailed("`threshold` must be a number between -1 and 1 (a cosine similarity).")
