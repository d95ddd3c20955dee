"""GET /metrics: Prometheus counters and histograms of calls, plus gauges read from the service at scrape time.

Each Service gets its own CollectorRegistry, so that several servers in one process (the tests)
never share or double-register a metric.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from ..errors import Forbidden, NanoTypeDBError, NotFound, Unauthenticated
from ..service import Service
from ..storage import jobs as jobs_store
from .http import bearer, service_of

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LOOPBACK = frozenset({"127.0.0.1", "::1"})
# Calls to names that are not functions share one label, so a scanner cannot grow the series without bound.
UNKNOWN_FUNCTION = "_unknown"
# Latency buckets in seconds: most calls take well under a millisecond to a few milliseconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The registry of one service: call metrics fed by `Runtime.observers`, the rest read when scraped."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "nanotypedb_calls",
            "Function calls by function and outcome code (ok or the error code).",
            ("function", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "nanotypedb_call_duration_seconds",
            "Seconds a function call took, by function and outcome code.",
            ("function", "code"),
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_ServiceCollector(service))
        self._series: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        service.runtime.observers.append(self.observe)

    def observe(self, name: str, code: str, seconds: float, caller: str) -> None:
        series = self._series.get((name, code))
        if series is None:
            series = self._new_series(name, code)
        series[0].inc()
        series[1].observe(seconds)

    def _new_series(self, name: str, code: str) -> tuple[Counter, Histogram]:
        """The children of a function's labels, kept for its next calls (`labels()` is most of the cost).
        Names that are not functions share one series and are not kept: a scanner may send any."""
        if self.service.app.functions.get(name) is None:
            return self.calls.labels(UNKNOWN_FUNCTION, code), self.latency.labels(UNKNOWN_FUNCTION, code)
        series = self._series[(name, code)] = (self.calls.labels(name, code), self.latency.labels(name, code))
        return series

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ServiceCollector(Collector):
    """Values the service already keeps, read at each scrape rather than mirrored on every change."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        s = self.service
        info = GaugeMetricFamily(
            "nanotypedb_environment_info", "The environment this server serves (always 1).", labels=("name", "type")
        )
        info.add_metric((s.environment.name, s.environment.type.value), 1)
        yield info
        yield _counter("nanotypedb_commits", "Mutations committed (versions made).", s.engine.stats.mutations)
        yield _counter(
            "nanotypedb_group_commits", "Write transactions committed (each one fsync).", s.engine.stats.group_commits
        )
        yield _counter(
            "nanotypedb_wal_checkpoints",
            "WAL checkpoints run by the checkpoint thread, beside the writer.",
            s.engine.checkpoints[0],
        )
        yield _counter(
            "nanotypedb_wal_writer_checkpoints",
            "WAL checkpoints the writer ran itself, because writes left the thread no pause to finish.",
            s.engine.checkpoints[1],
        )
        yield _counter(
            "nanotypedb_failed_mutations",
            "Mutations that raised and were rolled back.",
            s.engine.stats.failed_mutations,
        )
        yield _counter("nanotypedb_rate_limited", "Calls refused by the rate limiter.", s.runtime.rate_limited)
        yield _gauge("nanotypedb_websocket_connections", "Open WebSocket connections.", s.connections)
        yield _counter(
            "nanotypedb_websocket_refused",
            "WebSocket connections refused because --ws-max-connections were open.",
            s.connections_refused,
        )
        yield _gauge(
            "nanotypedb_live_queries", "Distinct live queries (function, arguments, caller).", len(s.hub.queries)
        )
        subscriptions = sum(len(q.subscribers) for q in s.hub.queries.values())
        yield _gauge("nanotypedb_live_subscriptions", "Live-query subscriptions of all connections.", subscriptions)
        jobs = CounterMetricFamily("nanotypedb_jobs", "Jobs this process finished, by outcome.", labels=("outcome",))
        jobs.add_metric(("done",), s.jobs.done)
        jobs.add_metric(("failed",), s.jobs.failed)
        yield jobs
        yield from self._queue()

    def _queue(self) -> Iterator[Metric]:
        if not self.service.engine.is_open:
            return  # /readyz says so
        try:
            counts = self.service.engine.read_sync(lambda tx: jobs_store.counts(tx.conn)).value
        except (NanoTypeDBError, sqlite3.Error):
            return  # closed meanwhile
        depth = GaugeMetricFamily("nanotypedb_jobs_queued", "Jobs in the queue, by status.", labels=("status",))
        for status, n in counts.items():
            depth.add_metric((status,), n)
        yield depth


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def check_access(request: Request, access: str) -> None:
    """`open`: anyone; `loopback`: anyone on 127.0.0.1 or ::1, an admin key from elsewhere; `key`: an
    admin key; `off`: no such route."""
    if access == "off":
        raise NotFound(f"No route {request.url.path}.")
    if access == "open" or (access == "loopback" and request.client is not None and request.client.host in LOOPBACK):
        return
    principal = service_of(request).authenticate(bearer(request.headers.get("authorization")))
    if principal.is_anonymous:
        raise Unauthenticated("/metrics needs an admin API key here: send `Authorization: Bearer ntdb_…`.")
    if not principal.is_admin:
        raise Forbidden("Only an admin API key may read /metrics.")


async def metrics(request: Request) -> Response:
    """GET /metrics: the Prometheus text format, when `--metrics-access` lets this caller in."""
    check_access(request, service_of(request).config.metrics_access)
    exporter: Metrics = request.app.state.metrics
    return Response(exporter.render(), media_type=CONTENT_TYPE)
