"""Calling a function: access, rate limit, argument validation, then the run that fits its kind."""

from __future__ import annotations

import inspect
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..auth.principal import Principal
from ..errors import (
    BadRequest,
    Conflict,
    FunctionNotFound,
    InternalError,
    NanoTypeDBError,
    RateLimited,
    Unauthenticated,
)
from ..lib.ids import request_id as new_request_id
from ..lib.logs import REQUEST_ID
from ..lib.ratelimit import Rate, RateLimiter
from ..protocol import dumps
from ..storage.audit import Origin
from ..storage.engine import Failed, SqliteEngine
from ..storage.reads import ReadSet
from ..storage.transaction import Transaction
from .cache import Entry, QueryCache
from .cache import key as cache_key
from .context import Ctx
from .db import Db, Page
from .jobs import JobSpec
from .registry import Function, FunctionKind, Registry

log = logging.getLogger(__name__)
# Told of every call through `Runtime.call`: (function name, "ok" or the error code, seconds taken,
# the caller's kind: "admin", "service", "user" or "anonymous").
CallObserver = Callable[[str, str, float, str], None]


@dataclass(frozen=True, slots=True)
class Rerun:
    """A live query's re-run that raised: the error to send, and what it read before it did."""

    error: NanoTypeDBError
    read_set: ReadSet


@dataclass(frozen=True, slots=True)
class CallResult:
    """A function's result, already encoded as JSON (`encoded`), and the version it saw or made."""

    data: Any
    version: int
    encoded: bytes
    read_set: ReadSet | None = None  # what a query read (None for mutations and actions)


class Runtime:
    """Runs an app's functions against one engine."""

    def __init__(
        self,
        registry: Registry,
        engine: SqliteEngine,
        *,
        default_rate: Rate,
        limiter: RateLimiter | None = None,
        cache_entries: int = 10_000,
    ) -> None:
        self.registry = registry
        # The job handlers mutations may queue: the app's, plus the server's own (embeddings).
        self.jobs: dict[str, JobSpec] = dict(registry.jobs)
        self.embeddings: Any = None  # the server's Embeddings, when it embeds (ctx.search, ctx.embed)
        self.analytics: Any = None  # the server's analytics Recorder, when analytics are on (getAnalytics)
        # The audit log's chains (name, database file) that verifyAuditLog checks; the service sets them.
        self.audit_chains: list[tuple[str, Path]] = []
        self.engine = engine
        self.default_rate = default_rate
        self.limiter = limiter or RateLimiter()
        self.cache = QueryCache(cache_entries)
        # WebSocket calls in progress, counted when their frame arrives (before their task
        # runs): a mutation that is the only one runs at once; with company it joins the
        # writer's next batch, where it shares a commit.
        self.active = 0
        self.rate_limited = 0  # calls refused by the rate limiter, for /metrics
        self.observers: list[CallObserver] = []
        engine.on_commit(self.cache.invalidate)

    def lookup(self, name: str, principal: Principal, client: str = "") -> Function:
        """Find the function and check that this caller may call it now."""
        fn = self.registry.get(name)
        if fn is None:
            raise FunctionNotFound(f"There is no function named {name!r}.")
        if principal.is_anonymous and not fn.public:
            raise Unauthenticated(f"Function {name!r} needs a signed-in caller: send a token or an API key.")
        key = (principal.kind, principal.id or client, name)
        wait = self.limiter.acquire(key, fn.rate or self.default_rate)
        if wait > 0:
            self.rate_limited += 1
            raise RateLimited(f"Too many calls to {name!r}: retry in {wait:.2f} s.", retry_after=round(wait, 3))
        return fn

    async def call(
        self,
        principal: Principal,
        name: str,
        body: bytes | str,
        *,
        request_id: str,
        client: str = "",
        counted: bool = False,
    ) -> CallResult:
        """The whole path of one call, from JSON arguments to a result with its version.

        `counted`: the transport counted this call in `active` when it arrived, so
        `active` tells whether other calls came with it. Each observer hears of it once it ends.
        """
        token = REQUEST_ID.set(request_id)  # log lines of this call carry its id (--log-format json)
        start, outcome = time.perf_counter(), "ok"
        try:
            return await self._call(principal, name, body, request_id, client, counted)
        except NanoTypeDBError as exc:
            outcome = exc.code
            raise
        except Exception:
            outcome = "InternalError"
            raise
        finally:
            seconds = time.perf_counter() - start
            for observe in self.observers:
                observe(name, outcome, seconds, principal.kind.value)
            log.debug("call %s: %s in %.2f ms", name, outcome, seconds * 1000)
            REQUEST_ID.reset(token)

    async def _call(
        self, principal: Principal, name: str, body: bytes | str, request_id: str, client: str, counted: bool
    ) -> CallResult:
        fn = self.lookup(name, principal, client)
        args = fn.parse_args(body)
        if fn.kind is FunctionKind.QUERY and fn.cacheable:
            return await self.query(fn, principal, args, body if isinstance(body, bytes) else body.encode(), request_id)
        return await self.invoke(fn, principal, args, request_id, client, alone=counted and self.active <= 1)

    async def query(
        self, fn: Function, principal: Principal, args: dict[str, Any], body: bytes, request_id: str
    ) -> CallResult:
        """A query, answered from the cache while no commit has touched what it read."""
        k = cache_key(fn.name, body, principal)
        entry = self.cache.get(k)
        if entry is not None:
            return CallResult(entry.data, self.engine.version, entry.encoded)
        version_before = self.engine.version
        result = await self.invoke(fn, principal, args, request_id)
        if result.read_set is not None:
            self.cache.put(k, Entry(result.data, result.encoded, result.read_set), result.version, version_before)
        return result

    async def run(
        self, principal: Principal, kind: FunctionKind, name: str, args: dict[str, Any], request_id: str, client: str
    ) -> Any:
        """Call a query or mutation from an action, as the same caller, re-validating its arguments."""
        fn = self.lookup(name, principal, client)
        if fn.kind is not kind:
            raise BadRequest(f"{name!r} is a {fn.kind.value}, not a {kind.value}: call it with run_{fn.kind.value}.")
        result = await self.invoke(fn, principal, fn.parse_args(dumps(args)), request_id, client)
        return result.data

    def rerun(
        self, calls: Sequence[tuple[Function, Principal, dict[str, Any]]]
    ) -> tuple[int, list[CallResult | Rerun]]:
        """Run queries for live subscriptions, all in one snapshot; an error is a Rerun, not raised."""
        rids = [new_request_id() for _ in calls]
        version, reads = self.engine.read_many(
            [self._bind(fn, principal, args, rid) for (fn, principal, args), rid in zip(calls, rids, strict=True)]
        )
        results: list[CallResult | Rerun] = []
        for (fn, _, _), rid, read in zip(calls, rids, reads, strict=True):
            if isinstance(read, Failed):
                results.append(Rerun(self._public(fn, read.error, rid), read.read_set))
            else:
                results.append(CallResult(read.value[0], version, read.value[1], read.read_set))
        return version, results

    async def invoke(
        self,
        fn: Function,
        principal: Principal,
        args: dict[str, Any],
        request_id: str,
        client: str = "",
        alone: bool = False,
    ) -> CallResult:
        try:
            if fn.kind is FunctionKind.QUERY:
                read = await self.engine.read(self._bind(fn, principal, args, request_id))
                return CallResult(read.value[0], read.version, read.value[1], read.read_set)
            if fn.kind is FunctionKind.MUTATION:
                write = await self.engine.write(self._bind(fn, principal, args, request_id, client), alone=alone)
                return CallResult(write.value[0], write.version, write.value[1])
            value = await self._act(fn, principal, args, request_id, client)
            return CallResult(value, self.engine.version, _encode(fn, value))
        except Exception as exc:
            raise self._public(fn, exc, request_id) from None

    def _public(self, fn: Function, exc: Exception, request_id: str) -> NanoTypeDBError:
        """What a caller may see of a function's error: ours as they are, anything else logged and hidden."""
        if isinstance(exc, NanoTypeDBError):
            return exc
        if isinstance(exc, sqlite3.IntegrityError):
            log.info("constraint violated in %s [%s]: %s", fn.name, request_id, exc)
            return Conflict("The write breaks a uniqueness or reference constraint.")
        log.error("function %s failed [%s]", fn.name, request_id, exc_info=exc)
        return InternalError(f"Function {fn.name!r} failed; the server log has the details (request {request_id}).")

    def _bind(self, fn: Function, principal: Principal, args: dict[str, Any], request_id: str, client: str = "") -> Any:
        # Who the audit log names for a mutation's writes (queries, re-run on every commit, write nothing).
        mutation = fn.kind is FunctionKind.MUTATION
        origin = Origin(principal.kind.value, principal.id or "", fn.name, request_id, client) if mutation else None

        def run(tx: Transaction) -> tuple[Any, bytes]:
            if origin is not None:
                tx.origin = origin
            ctx = Ctx(principal, request_id, Db(tx, principal, self.jobs))
            value = _plain(fn.handler(ctx, **args))
            # Encoded inside the transaction: a mutation whose result cannot be sent rolls back.
            return value, _encode(fn, value)

        return run

    async def _act(self, fn: Function, principal: Principal, args: dict[str, Any], request_id: str, client: str) -> Any:
        ctx = Ctx(principal, request_id, None, self, client)
        value = fn.handler(ctx, **args)
        if inspect.isawaitable(value):
            value = await value
        return _plain(value)


def _plain(value: Any) -> Any:
    """Results leave the transaction as plain data (pages become dicts)."""
    return value.to_dict() if isinstance(value, Page) else value


def _encode(fn: Function, value: Any) -> bytes:
    try:
        return dumps(value)
    except TypeError as exc:
        log.error("function %s returned a value JSON cannot carry: %s", fn.name, exc)
        # Only a mutation's own writes are undone; an action's inner calls have committed.
        undone = "; nothing was written" if fn.kind is FunctionKind.MUTATION else ""
        raise InternalError(
            f"Function {fn.name!r} returned a value that cannot be sent as JSON ({exc}){undone}."
        ) from None
