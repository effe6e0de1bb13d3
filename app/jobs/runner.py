"""Running one job: claim, execute, record the outcome (worker side).

A run has two transactions on one connection:
1. claim: lock the row (SKIP LOCKED: a locked row is being run right now),
   check it still needs running, count the delivery, mark it `running`, commit;
2. execute: lock the row again, check this run still owns it, call the
   handler, and record success in the same transaction as the handler's own
   effects. The row lock is held while the handler works, so a `running` row
   that can be locked belongs to a run that died (the connection closed).

Failures are classified: transient ones (SMTP 4xx, connection trouble,
timeouts, anything unexpected) retry with exponential backoff and jitter up
to `job_max_retries` times; permanent ones go to `dead` at once. A job whose
runs vanish (worker killed) `job_max_lost_deliveries` times is dead too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable, Dict, Optional, Union

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import app.models  # noqa: F401 - every mapper configured before the first query
from app.core.config import Settings, get_settings
from app.core.security import utcnow
from app.jobs import metrics, repository
from app.jobs.models import DEAD, QUEUED, RETRYING, RUNNING, SUCCEEDED, Job
from app.jobs.outbox import OutboundMessage, publish_after_commit
from app.services.mailer import MailPermanentError, MailTransientError

logger = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Job], Awaitable[None]]
HANDLERS: Dict[str, Handler] = {}

# Deliveries may arrive a little before `available_at` (clock skew, ETA rounding).
_EARLY_TOLERANCE = timedelta(milliseconds=500)
_MAX_ERROR_CHARS = 2000


class PermanentJobError(Exception):
    """Retrying cannot help (e.g. the user the job refers to is gone)."""


class TransientJobError(Exception):
    """Worth retrying later."""


_PERMANENT = (PermanentJobError, MailPermanentError)
_TRANSIENT = (
    TransientJobError,
    MailTransientError,
    asyncio.TimeoutError,
    OSError,
    OperationalError,
    InterfaceError,
)


def job_task(kind: str) -> Callable[[Handler], Handler]:
    """Register `handler` for a job kind and a Celery task of the same name."""

    def register(handler: Handler) -> Handler:
        from app.worker import celery_app

        if kind in HANDLERS:
            raise RuntimeError(f"job kind {kind!r} registered twice")
        HANDLERS[kind] = handler

        @celery_app.task(name=kind, ignore_result=True)
        def run(job_id: int) -> str:
            return run_in_worker(job_id, kind)

        return handler

    return register


def backoff_seconds(attempt: int, settings: Settings, rng: Optional[random.Random] = None) -> float:
    """Exponential backoff with full jitter: uniform in [base*2^(n-1)/2, base*2^(n-1)], capped."""
    rng = rng or random.Random()
    ceiling = min(
        settings.job_backoff_max_seconds, settings.job_backoff_base_seconds * 2 ** (attempt - 1)
    )
    return rng.uniform(ceiling / 2, ceiling)


@dataclass
class Outcome:
    status: str  # a job status, or "skipped"
    detail: str = ""


async def execute_job(
    sessionmaker: async_sessionmaker[AsyncSession],
    job_id: int,
    kind: str,
    settings: Optional[Settings] = None,
) -> Outcome:
    settings = settings or get_settings()
    async with sessionmaker() as session:
        claimed = await _claim(session, job_id, kind, settings)
        if isinstance(claimed, Outcome):
            return claimed
        delivery = claimed
        job = await repository.lock_job(session, job_id, skip_locked=False)
        if job is None or job.status != RUNNING or job.deliveries != delivery:
            await session.rollback()
            return Outcome("skipped", "another run took over")
        handler = HANDLERS[kind]
        try:
            await asyncio.wait_for(handler(session, job), timeout=settings.job_timeout_seconds)
        except _PERMANENT as exc:
            return await _record_failure(session, job_id, delivery, exc, settings, permanent=True)
        except _TRANSIENT as exc:
            return await _record_failure(session, job_id, delivery, exc, settings, permanent=False)
        except DBAPIError as exc:
            return await _record_failure(session, job_id, delivery, exc, settings, permanent=False)
        except Exception as exc:
            logger.exception("job %s (%s) failed unexpectedly", job_id, kind)
            return await _record_failure(session, job_id, delivery, exc, settings, permanent=False)
        # Core UPDATE: same row, same transaction as the handler's effects,
        # without a unit-of-work flush (the handler may still have pending ORM
        # changes: commit flushes those).
        await repository.mark_succeeded(session, job_id)
        await session.commit()
        return Outcome(SUCCEEDED)


async def _claim(
    session: AsyncSession, job_id: int, kind: str, settings: Settings
) -> Union[int, Outcome]:
    # Fast path (one statement): a due queued/retrying job nobody is running.
    delivery = await repository.claim_due_job(
        session, job_id, kind=kind, due_before=utcnow() + _EARLY_TOLERANCE
    )
    if delivery is not None:
        await session.commit()
        return delivery
    # Everything else (missing, locked, done, not due, lost runs, wrong kind).
    job = await repository.lock_job(session, job_id, skip_locked=True)
    if job is None:
        await session.rollback()
        return Outcome("skipped", "missing or being run")
    # A rollback expires the object: read what the messages need first.
    status, job_kind = job.status, job.kind
    if job_kind != kind:
        await session.rollback()
        logger.error("job %s is %s, not %s: message ignored", job_id, job_kind, kind)
        return Outcome("skipped", "kind mismatch")
    if status in (SUCCEEDED, DEAD):
        await session.rollback()
        return Outcome("skipped", f"already {status}")
    if status in (QUEUED, RETRYING) and job.available_at > utcnow() + _EARLY_TOLERANCE:
        await session.rollback()
        return Outcome("skipped", "not due yet")
    if job.status == RUNNING:
        # Unlocked yet running: the run that claimed it died with its worker.
        lost = job.deliveries - job.attempts
        logger.warning("job %s: previous run was lost (%d lost so far)", job_id, lost)
        if lost >= settings.job_max_lost_deliveries:
            job.status = DEAD
            job.last_error = f"worker lost during {lost} deliveries"
            await session.commit()
            metrics.JOB_OUTCOMES.labels(kind=kind, outcome=DEAD).inc()
            return Outcome(DEAD, job.last_error)
    job.status = RUNNING
    job.deliveries += 1
    delivery = job.deliveries
    await session.commit()
    return delivery


async def _record_failure(
    session: AsyncSession,
    job_id: int,
    delivery: int,
    exc: BaseException,
    settings: Settings,
    *,
    permanent: bool,
) -> Outcome:
    # Undo whatever the handler wrote, then record the failure on its own.
    await session.rollback()
    job = await repository.lock_job(session, job_id, skip_locked=False)
    if job is None or job.status != RUNNING or job.deliveries != delivery:
        await session.rollback()
        return Outcome("skipped", "another run took over")
    job.attempts += 1
    job.last_error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
    if permanent or job.attempts > settings.job_max_retries:
        job.status = DEAD
        logger.warning("job %s (%s) is dead: %s", job.id, job.kind, job.last_error)
    else:
        delay = backoff_seconds(job.attempts, settings)
        job.status = RETRYING
        job.available_at = utcnow() + timedelta(seconds=delay)
        job.published_at = job.available_at
        publish_after_commit(session, OutboundMessage(job.id, job.kind, countdown=delay))
        logger.info(
            "job %s (%s) retry %d in %.2fs: %s",
            job.id,
            job.kind,
            job.attempts,
            delay,
            job.last_error,
        )
    status = job.status
    await session.commit()
    return Outcome(status, job.last_error or "")


# --------------------------------------------------------------- worker runtime


class Runtime:
    """One event loop and one engine for a worker process."""

    def __init__(self, settings: Settings) -> None:
        from app.core.db import build_engine, db

        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.engine: AsyncEngine = build_engine(settings_for_worker(settings))
        db.configure(self.engine)
        self.sessionmaker = db.sessionmaker
        self.settings = settings

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        from app.core.db import db
        from app.services.mailer import close_mailer

        try:
            self.loop.run_until_complete(close_mailer())
            self.loop.run_until_complete(db.dispose())
        finally:
            self.loop.close()


def settings_for_worker(settings: Settings) -> Settings:
    # A pool process runs one job at a time: a small pool is plenty.
    return settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 2})


_runtime: Optional[Runtime] = None
_runtime_lock = threading.Lock()


def start_runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(get_settings())
        return _runtime


def stop_runtime() -> None:
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None


def run_in_worker(job_id: int, kind: str) -> str:
    """Entry point of every job task (sync, in a pool process)."""
    runtime = start_runtime()  # no-op after worker_process_init; needed for --pool=solo
    outcome = runtime.run(execute_job(runtime.sessionmaker, int(job_id), kind, runtime.settings))
    if outcome.status != "skipped":
        metrics.JOB_OUTCOMES.labels(kind=kind, outcome=outcome.status).inc()
    else:
        logger.debug("job %s skipped: %s", job_id, outcome.detail)
    return outcome.status
