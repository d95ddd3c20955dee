"""Hub: every live query, shared by its subscribers and re-run in one snapshot when a commit touches what it read.

Commits are handled in cycles. A cycle re-runs every live query that a commit since the
last cycle could have changed, all in one read snapshot, and sends each connection one
transition at that snapshot's version: so all of a connection's subscriptions advance
together, and none ever goes back. A commit made on the event loop starts its cycle at
once, before the mutation's reply: only the connections waiting for a reply of that commit
are held back until it has gone out.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from .. import protocol
from ..auth.principal import Principal
from ..errors import MalformedMessage, RateLimited
from ..functions.cache import Key
from ..functions.cache import key as query_key
from ..functions.registry import Function
from ..functions.runtime import CallResult, Rerun, Runtime
from ..storage.engine import Commit
from ..storage.reads import ReadSet
from .index import ReadIndex
from .outbox import Outbox, Shared

log = logging.getLogger(__name__)
# A snapshot newer than every commit announced means a commit whose announcement is on its
# way; after this many waits for it, the hub stops waiting and re-runs every query instead
# (a writer it never hears from, such as another process).
_MAX_STALLS = 3
_STALL_SECONDS = 0.05

Subscriber = tuple[Outbox, Any]


@dataclass(eq=False, slots=True)
class LiveQuery:
    """One query with its arguments and caller, and everyone subscribed to it."""

    key: Key
    fn: Function
    principal: Principal
    args: dict[str, Any]
    raw: bytes  # the arguments as sent, keys sorted
    subscribers: set[Subscriber] = field(default_factory=set)
    body: bytes | None = None  # the last entry sent, without its id: `"data":…,"reads":…` or `"error":…`
    read_set: ReadSet | None = None


@dataclass(slots=True)
class HubStats:
    cycles: int = 0
    reruns: int = 0  # query runs, first runs included
    entries: int = 0  # results staged for connections
    shared_frames: int = 0  # transitions written with wire bytes built for another connection


class Hub:
    """The live queries of one engine."""

    def __init__(self, runtime: Runtime, max_per_connection: int) -> None:
        self.runtime = runtime
        self.max_per_connection = max_per_connection
        self.queries: dict[Key, LiveQuery] = {}
        self.stats = HubStats()
        self.processed = 0  # every live query's last result reflects this version
        self.index = ReadIndex()
        self._dirty: set[LiveQuery] = set()
        self._fresh: dict[LiveQuery, set[Subscriber]] = {}  # subscribers still owed a first result
        self._acks: dict[Outbox, int] = {}  # connections owed a transition at ≥ this version
        self._seen = 0  # the last commit whose changes have been matched against live queries
        self._stalls = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outgoing: set[Outbox] = set()
        self._replying: dict[str, Outbox] = {}  # request id of a mutation in flight → its connection
        self._deliverer: asyncio.Task[None] | None = None
        runtime.engine.on_commit(self._on_commit)

    # -- subscribers ------------------------------------------------------------

    def subscribe(
        self, outbox: Outbox, sub_id: Any, fn: Function, principal: Principal, args: dict[str, Any], raw: bytes
    ) -> None:
        """Add a subscription; its first result goes out with the next transition."""
        if sub_id in outbox.subs:
            raise MalformedMessage(f"Subscription {sub_id!r} already exists on this connection; unsubscribe first.")
        if len(outbox.subs) >= self.max_per_connection:
            raise RateLimited(
                f"This connection already holds {len(outbox.subs)} subscriptions, the most it may.", retry_after=1.0
            )
        self._start()
        k = query_key(fn.name, raw, principal)
        lq = self.queries.get(k)
        if lq is None:
            lq = self.queries[k] = LiveQuery(k, fn, principal, args, raw)
        sub = (outbox, sub_id)
        lq.subscribers.add(sub)
        outbox.subs[sub_id] = lq
        if lq.body is not None and lq not in self._dirty and lq not in self._fresh:
            # Already live and current as of the last cycle, like every other subscription of
            # this connection: its result goes out as it is, with no run.
            self._stage(lq.body, [sub])
            self._send(outbox, self.processed)
            return
        self._fresh.setdefault(lq, set()).add(sub)
        self._wake.set()

    def unsubscribe(self, outbox: Outbox, sub_id: Any) -> None:
        lq = outbox.subs.pop(sub_id, None)
        outbox.forget(sub_id)
        if lq is None:
            return
        sub = (outbox, sub_id)
        lq.subscribers.discard(sub)
        fresh = self._fresh.get(lq)
        if fresh is not None:
            fresh.discard(sub)
        if not lq.subscribers:
            self._retire(lq)

    def drop(self, outbox: Outbox) -> None:
        """The connection closed: free everything it held."""
        for sub_id in list(outbox.subs):
            self.unsubscribe(outbox, sub_id)
        outbox.closed = True
        self._acks.pop(outbox, None)

    def expect_reply(self, outbox: Outbox, request_id: str) -> None:
        """A mutation of this connection is on its way: once it commits, hold the connection's
        transitions until `replied`, so the client hears of its write before seeing it."""
        self._replying[request_id] = outbox

    def replied(self, outbox: Outbox, request_id: str, version: int | None) -> None:
        """A call's reply went out, telling of a commit at `version` (None: it failed): release
        what its commit held, and make sure a transition at ≥ `version` follows."""
        self._replying.pop(request_id, None)
        outbox.holds.discard(request_id)
        if outbox.holds or not outbox.subs:
            return
        if version is not None and version > outbox.sent_version:
            if version > self.processed or self._dirty:
                self._acks[outbox] = max(self._acks.get(outbox, 0), version)
                self._wake.set()
                return
            outbox.advance(self.processed)
        if not outbox.write_now():
            self._send(outbox, self.processed)

    def _retire(self, lq: LiveQuery) -> None:
        del self.queries[lq.key]
        self._dirty.discard(lq)
        self._fresh.pop(lq, None)
        self._index(lq, None)

    def _index(self, lq: LiveQuery, read_set: ReadSet | None) -> None:
        lq.read_set = read_set
        self.index.put(lq, read_set)

    # -- commits ----------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.get_ident()
            self._seen = self.processed = max(self._seen, self.runtime.engine.version)
            self._task = self._loop.create_task(self._run(), name="ntdb-live")

    def _on_commit(self, commits: list[Commit]) -> None:
        """The engine's commit listener; it runs on the thread that wrote."""
        if self._loop is None:
            self._seen = max(self._seen, commits[-1].version)
        elif threading.get_ident() == self._thread:
            self._mark(commits)
        else:
            self._loop.call_soon_threadsafe(self._mark, commits)

    def _mark(self, commits: list[Commit]) -> None:
        for commit in commits:
            request = commit.info.get("request")
            if request in self._replying:
                self._replying[request].holds.add(request)
            if commit.info.get("external"):  # another process wrote: what changed is unknown
                self._dirty.update(self.queries.values())
                continue
            for change in commit.changes:
                for member in self.index.candidates(change.table, (change.before, change.after)):
                    lq = cast(LiveQuery, member)
                    if lq in self._dirty or lq.read_set is None:
                        continue
                    if lq.read_set.affected_by(change.table, change.before, change.after):
                        self._dirty.add(lq)
        self._seen = max(self._seen, commits[-1].version)
        # At once rather than from the task: the floor a fan-out is measured against sends
        # before it replies, and so does this (the writers' own connections are held).
        self._cycle_safely()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._cycle_safely()

    def _cycle_safely(self) -> None:
        try:
            self._cycle()
        except Exception:
            log.exception("live query cycle failed")

    def _cycle(self) -> None:
        runs = list(self._dirty | self._fresh.keys())
        if not runs and not self._acks:
            self.processed = max(self.processed, self._seen)  # no result changed: all reflect it
            return
        version, results = self.runtime.rerun([(lq.fn, lq.principal, lq.args) for lq in runs]) if runs else (0, [])
        version = version if runs else self._seen
        if version > self._seen and not self._stalled(version):
            return
        self._stalls = 0
        self.stats.cycles += 1
        self.stats.reruns += len(runs)
        self._dirty.clear()
        fresh, self._fresh = self._fresh, {}
        touched: set[Outbox] = set()
        for lq, result in zip(runs, results, strict=True):
            body = _body(result)
            self._index(lq, result.read_set)
            targets = lq.subscribers if body != lq.body else fresh.get(lq, set())
            lq.body = body
            touched.update(self._stage(body, targets))
        for outbox, want in list(self._acks.items()):
            if want <= version:
                touched.add(outbox)
                del self._acks[outbox]
        # Written right here rather than from the delivery task: one loop turn sooner, and
        # connections due the same transition share its frame.
        shared = Shared()
        for outbox in touched:
            if not outbox.write_now(shared, version):
                self._send(outbox, version)
        self.stats.shared_frames += shared.hits
        self.processed = version

    def _send(self, outbox: Outbox, version: int) -> None:
        """Send the outbox's frame at `version` soon: one task delivers every connection's frame."""
        outbox.advance(version)
        self._outgoing.add(outbox)
        if self._deliverer is None:
            assert self._loop is not None
            self._deliverer = self._loop.create_task(self._deliver())

    async def _deliver(self) -> None:
        shared = Shared()
        try:
            while self._outgoing:
                outbox = self._outgoing.pop()
                if not outbox.write_now(shared):
                    await outbox.send_now()
        finally:
            self.stats.shared_frames += shared.hits
            self._deliverer = None

    def _stage(self, body: bytes, targets: Iterable[Subscriber]) -> list[Outbox]:
        """Stage one result for each subscriber whose connection may still receive it."""
        staged = []
        now = time.time()
        for outbox, sub_id in targets:
            if outbox.lapses_at <= now and outbox.lapsed():
                continue
            outbox.stage(sub_id, body)
            staged.append(outbox)
        self.stats.entries += len(staged)
        return staged

    def _stalled(self, version: int) -> bool:
        """The snapshot holds a commit not yet announced: wait for it, or after a few waits, stop waiting."""
        self._stalls += 1
        if self._stalls < _MAX_STALLS:
            assert self._loop is not None
            self._loop.call_later(_STALL_SECONDS, self._wake.set)
            return False
        log.warning("commits up to version %d were never announced; re-running every live query", version)
        self._seen = version
        self._dirty.update(self.queries.values())
        self._wake.set()
        return False


def _body(result: CallResult | Rerun) -> bytes:
    if isinstance(result, Rerun):
        # No request id: the same error on the next re-run is the same entry, and is not re-sent.
        return b'"error":' + protocol.dumps(result.error.to_dict())
    views = list(result.read_set.views.values()) if result.read_set is not None else []
    return b'"data":' + result.encoded + b',"reads":' + protocol.dumps(views)
