"""gunicorn settings used by `keel serve` (`-c python:app.gunicorn_conf`)."""

from __future__ import annotations

import os
from typing import Any

from uvicorn.workers import UvicornWorker

from app.core.config import get_settings

_settings = get_settings()

bind = os.environ.get("KEEL_BIND", f"{_settings.host}:{_settings.port}")
workers = int(os.environ.get("KEEL_WORKERS") or _settings.web_concurrency or (os.cpu_count() or 1))
worker_class = "app.gunicorn_conf.KeelUvicornWorker"
# SIGTERM: stop accepting, let in-flight requests finish for up to 30 s.
graceful_timeout = 30
timeout = 60
keepalive = 5
accesslog = None


class KeelUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": _settings.event_loop, "http": "httptools"}


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
