"""The Celery application (the one place it is defined).

Tasks are named "<domain>.<verb>" and take job ids only, one or a few
jobs of that kind per message (app/jobs). Delivery
is at-least-once: acks_late + reject_on_worker_lost put a task whose pool
process died back on the queue, and the job rows make re-runs harmless.

Each pool process gets one event loop and one async engine, created when
the process starts (worker_process_init), and reused SMTP connections (one
per job running at once); all closed when it stops. The worker's main process runs the outbox sweep.
"""

from __future__ import annotations

import logging
from typing import Any, Dict
from urllib.parse import parse_qs, urlsplit

from celery import Celery
from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from app.core.config import get_settings

logger = logging.getLogger(__name__)

TASK_MODULES = ("app.emails.tasks", "app.users.tasks", "app.auth.tasks")
QUEUE = "keel"


def broker_url_from_redis_url(url: str) -> str:
    """kombu spells Redis unix sockets `redis+socket:///path?virtual_host=N`."""
    if not url.startswith("unix://"):
        return url
    parts = urlsplit(url)
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return f"redis+socket://{parts.path}?virtual_host={db}"


def _config() -> Dict[str, Any]:
    from app.core.redis import resolve_redis_url

    settings = get_settings()
    return {
        "broker_url": broker_url_from_redis_url(resolve_redis_url(settings)),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Redeliver a whole dead worker's unacked messages eventually; the
            # outbox sweep normally gets there first (see app/jobs/sweep.py).
            "visibility_timeout": 3600,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Hard limit only: a signal-raised soft limit would land inside the
        # event loop. Jobs time themselves out earlier (job_timeout_seconds).
        "task_time_limit": settings.job_time_limit_seconds,
        "task_default_queue": QUEUE,
        "task_publish_retry": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "worker_concurrency": settings.worker_concurrency,
        "imports": TASK_MODULES,
        "timezone": "UTC",
        "enable_utc": True,
    }


celery_app = Celery("keel", set_as_current=True)
celery_app.add_defaults(_config)


# The outbox sweep runs in every pool process, never in the parent: a
# prefork parent that held DB/Redis sockets would hand copies to each child
# it forks, and a child closing a stale copy (after billiard closed and
# reused the descriptor number) would cut one of its own live connections.
@worker_process_init.connect
def _start_process_runtime(**_: Any) -> None:
    from app.jobs.runner import start_runtime
    from app.jobs.sweep import start_sweeper

    start_runtime()
    start_sweeper()


@worker_process_shutdown.connect
def _stop_process_runtime(**_: Any) -> None:
    from app.jobs.runner import stop_runtime
    from app.jobs.sweep import stop_sweeper

    stop_sweeper()
    stop_runtime()


@worker_ready.connect
def _start_sweep_in_solo_worker(sender: Any = None, **_: Any) -> None:
    # The solo pool has no child processes: the worker itself sweeps.
    pool = getattr(sender, "pool", None)
    if pool is not None and "solo" in type(pool).__module__:
        from app.jobs.sweep import start_sweeper

        start_sweeper()


@worker_shutdown.connect
def _stop_sweep(**_: Any) -> None:
    from app.jobs.sweep import stop_sweeper

    stop_sweeper()
