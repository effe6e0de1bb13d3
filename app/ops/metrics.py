"""Prometheus metrics: HTTP requests by route template and status, DB pool.

Domains define their own metrics (jobs, predictions) with prometheus_client;
they all land in the default registry. Under gunicorn (`keel serve`),
PROMETHEUS_MULTIPROC_DIR is set and /metrics aggregates every worker.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Iterator, Tuple

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter("keel_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "keel_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


_POOL_GAUGES = (
    ("keel_db_pool_size", "Configured pool size", "size"),
    ("keel_db_pool_checked_out", "Connections in use", "checked_out"),
    ("keel_db_pool_overflow", "Connections beyond pool_size", "overflow"),
)


class PoolCollector(Collector):
    """Connection pool usage of the process answering the scrape."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Registration asks for the names here instead of calling collect(),
        # which would read the pool outside any event loop (at import time).
        for name, doc, _ in _POOL_GAUGES:
            yield GaugeMetricFamily(name, doc, labels=["pid"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from app.core.db import db

        pool = db.pool_status()
        if pool is None:
            return
        pid = str(os.getpid())
        for name, doc, key in _POOL_GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["pid"])
            family.add_metric([pid], pool[key])
            yield family


_pool_collector = PoolCollector()
REGISTRY.register(_pool_collector)


def render_metrics() -> tuple[bytes, str]:
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(_pool_collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (not the raw
    path, so ids do not explode the label set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # labels() hashes and looks up its arguments on every call (costly in
        # multiprocess mode); the label sets are few, so keep the children.
        self._children: Dict[Tuple[str, str, int], Tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            key = (scope["method"], template, status)
            children = self._children.get(key)
            if children is None:
                children = (
                    HTTP_REQUESTS.labels(key[0], template, str(status)),
                    HTTP_LATENCY.labels(key[0], template),
                )
                if len(self._children) < 10_000:  # bounded: methods and statuses are free text
                    self._children[key] = children
            requests, latency = children
            requests.inc()
            latency.observe(time.perf_counter() - start)
