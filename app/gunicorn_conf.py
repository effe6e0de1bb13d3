"""gunicorn settings used by `keel serve` (`-c python:app.gunicorn_conf`):
stock gunicorn managing uvicorn's worker class.

Workers: `keel serve --workers N`, else WEB_CONCURRENCY, else the CPUs this
process may use (app/core/cpu_count.py). The app is imported once in the
master (`preload_app`); each forked worker runs the lifespan itself (model,
batcher and pools are per process). On SIGTERM workers finish their
requests in flight for up to `graceful_timeout` seconds.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import multiprocess
from uvicorn.workers import UvicornWorker

from app.cli import memory_backed_dir
from app.core.config import get_settings
from app.core.cpu_count import available_cpus

_settings = get_settings()

bind = os.environ.get("KEEL_BIND", f"{_settings.host}:{_settings.port}")
workers = int(os.environ.get("KEEL_WORKERS") or _settings.web_concurrency or available_cpus())
worker_class = "app.gunicorn_conf.KeelUvicornWorker"
preload_app = True
graceful_timeout = 30
timeout = 60
keepalive = 5
accesslog = None
worker_tmp_dir = memory_backed_dir()  # the heartbeat file: see memory_backed_dir


class KeelUvicornWorker(UvicornWorker):
    """uvicorn's worker with the configured event loop (uvicorn documents
    subclassing it to set CONFIG_KWARGS)."""

    CONFIG_KWARGS = {"loop": _settings.event_loop, "http": "auto"}


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics
    (prometheus_client's documented gunicorn hook). `multiprocess` is imported
    at the top: importing it inside this SIGCHLD handler could re-enter an
    import already under way when two workers exit together."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
