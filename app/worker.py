"""The Celery application (the one place it is defined).

Tasks are named "<domain>.<verb>" and take job ids only (app/jobs). Delivery
is at-least-once: acks_late + reject_on_worker_lost put a task whose pool
process died back on the queue, and the job rows make re-runs harmless.
This module imports no jobs code; the worker's process signals are wired in
app/jobs/runner.py, the first module in `imports`.
"""

from __future__ import annotations

from typing import Any, Dict
from urllib.parse import parse_qs, urlsplit

from celery import Celery

from app.core.config import get_settings
from app.dev import register_embedded_defaults

# app.jobs.runner first: it wires the worker's process signals.
TASK_MODULES = ("app.jobs.runner", "app.emails.tasks", "app.users.tasks", "app.auth.tasks")
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

    register_embedded_defaults()
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
