"""Running one job: claim, execute, record the outcome (worker side).

A run has two transactions:
1. claim: lock the row (SKIP LOCKED: a locked row is being run right now),
   check it still needs running, count the delivery, mark it `running`;
2. execute: lock the row again recording success (if this run still owns
   it), call the handler, commit: success and the handler's effects commit
   or roll back together; a failure is then recorded on its own. The lock is
   held while the handler works, so a lockable `running` row belongs to a
   run that died.

Transient failures (SMTP 4xx, connection trouble, timeouts, anything
unexpected) retry with backoff and jitter up to `job_max_retries` times;
permanent ones, and jobs lost `job_max_lost_deliveries` times, are `dead`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Union

from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

import app.models  # noqa: F401 - every mapper configured before the first query
from app.core.config import Settings, get_settings
from app.core.security import utcnow
from app.integrations.mailer import MailPermanentError, MailTransientError
from app.jobs import metrics, repository
from app.jobs.models import DEAD, QUEUED, RETRYING, RUNNING, SUCCEEDED, Job
from app.jobs.outbox import publish_after_commit, relay
from app.jobs.publisher import OutboundMessage
from app.jobs.sweep import start_sweeper, stop_sweeper

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
_TRANSIENT = (TransientJobError, MailTransientError, asyncio.TimeoutError, OSError, DBAPIError)


def job_task(kind: str) -> Callable[[Handler], Handler]:
    """Register `handler` for a job kind and a Celery task of the same name."""

    def register(handler: Handler) -> Handler:
        from app.worker import celery_app

        if kind in HANDLERS:
            raise RuntimeError(f"job kind {kind!r} registered twice")
        HANDLERS[kind] = handler

        @celery_app.task(name=kind, ignore_result=True)
        def run(*job_ids: int) -> List[str]:
            return run_in_worker(job_ids, kind)

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


@dataclass
class _Claim:
    delivery: int
    job: Job  # a detached copy: what the handler may read


async def execute_job(
    connection: AsyncConnection,
    job_id: int,
    kind: str,
    settings: Optional[Settings] = None,
) -> Outcome:
    """Run one job on `connection` (not in a transaction; left in none)."""
    settings = settings or get_settings()
    async with AsyncSession(bind=connection, expire_on_commit=False) as session:
        # Fast path (one statement): a due queued/retrying job nobody is
        # running. The claim commits before the job runs, so a worker that
        # dies mid-job leaves the delivery counted.
        fast = await repository.claim_due_job(
            session, job_id, kind=kind, due_before=utcnow() + _EARLY_TOLERANCE
        )
        claimed: Union[_Claim, Outcome]
        if fast is not None:
            await session.commit()
            claimed = _Claim(*fast)
        else:
            claimed = await _claim(session, job_id, kind, settings)
        if isinstance(claimed, Outcome):
            return claimed
        delivery, job = claimed.delivery, claimed.job
        # Lock the row and record success up front: the success commits
        # with the handler's effects or rolls back with them.
        if not await repository.lock_run_as_succeeded(session, job_id, delivery=delivery):
            await session.rollback()
            return Outcome("skipped", "another run took over")
        handler = HANDLERS[kind]
        try:
            await asyncio.wait_for(handler(session, job), timeout=settings.job_timeout_seconds)
        except _PERMANENT as exc:
            return await _record_failure(session, job_id, delivery, exc, settings, permanent=True)
        except _TRANSIENT as exc:
            return await _record_failure(session, job_id, delivery, exc, settings, permanent=False)
        except Exception as exc:
            logger.exception("job %s (%s) failed unexpectedly", job_id, kind)
            return await _record_failure(session, job_id, delivery, exc, settings, permanent=False)
        await session.commit()
        return Outcome(SUCCEEDED)


async def _claim(
    session: AsyncSession, job_id: int, kind: str, settings: Settings
) -> Union[_Claim, Outcome]:
    """The careful claim, when the fast one did not apply: missing, locked,
    done, not due, lost runs, wrong kind."""
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
            return Outcome(DEAD, job.last_error)
    job.status = RUNNING
    job.deliveries += 1
    claim = _Claim(job.deliveries, repository.detached_copy(job))
    await session.commit()
    return claim


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

# Jobs of one message run on up to this many lanes at once, each with its own
# database and SMTP connection: a job mostly waits on round trips.
JOB_LANES = 4


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
        from app.integrations.mailer import close_mailer

        try:
            self.loop.run_until_complete(close_mailer())
            self.loop.run_until_complete(db.dispose())
        finally:
            self.loop.close()


def settings_for_worker(settings: Settings) -> Settings:
    # A pool process runs up to JOB_LANES jobs at a time, one connection each.
    return settings.model_copy(update={"db_pool_size": JOB_LANES, "db_max_overflow": 2})


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


async def execute_batch(
    engine: AsyncEngine,
    job_ids: Sequence[int],
    kind: str,
    settings: Settings,
    lanes: int = JOB_LANES,
) -> List[Outcome]:
    """Run the jobs of one task message, up to `lanes` at a time (one at a
    time if any is already `running`), each lane on one connection. Once half
    the slack between the job timeout and the task's hard time limit is used,
    the rest go back to the broker (still queued), so the limit never kills a
    batch. Outcomes come back in the order of `job_ids`."""
    loop = asyncio.get_running_loop()
    budget = (settings.job_time_limit_seconds - settings.job_timeout_seconds) / 2
    started = loop.time()
    outcomes: Dict[int, Outcome] = {}
    cursor = [0]  # the next index to start, shared by the lanes
    if lanes > 1 and len(job_ids) > 1:
        async with AsyncSession(engine) as session:
            if await repository.any_running(session, job_ids):
                # Likely a redelivery after a worker died: one at a time, so
                # that a job that kills its worker costs the jobs beside it
                # no further lost deliveries (they would end up dead too).
                lanes = 1

    async def lane() -> None:
        async with engine.connect() as connection:
            while cursor[0] < len(job_ids):
                index = cursor[0]
                if index and loop.time() - started > budget:
                    rest = job_ids[index:]
                    cursor[0] = len(job_ids)
                    relay.submit([OutboundMessage(int(job_id), kind) for job_id in rest])
                    logger.info("job batch out of time: %d job(s) handed back", len(rest))
                    return
                cursor[0] = index + 1
                job_id = int(job_ids[index])
                outcome = await execute_job(connection, job_id, kind, settings)
                if outcome.status != "skipped":
                    metrics.JOB_OUTCOMES.labels(kind=kind, outcome=outcome.status).inc()
                else:
                    logger.debug("job %s skipped: %s", job_id, outcome.detail)
                outcomes[index] = outcome

    results = await asyncio.gather(
        *(lane() for _ in range(max(1, min(lanes, len(job_ids))))), return_exceptions=True
    )
    # Every lane has finished before an error goes up (nothing left running).
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [outcomes[index] for index in sorted(outcomes)]


def run_in_worker(job_ids: Sequence[int], kind: str) -> List[str]:
    """Entry point of every job task (sync, in a pool process)."""
    runtime = start_runtime()  # no-op after worker_process_init; needed for --pool=solo
    outcomes = runtime.run(execute_batch(runtime.engine, job_ids, kind, runtime.settings))
    return [outcome.status for outcome in outcomes]


# --------------------------------------------------------------- worker signals


# The outbox sweep runs in every pool process, never in the parent: sockets a
# prefork parent held would be copied into each child it forks, where closing
# a stale copy could cut one of the child's own live connections.
@worker_process_init.connect
def _start_process_runtime(**_: Any) -> None:
    start_runtime()
    start_sweeper()


@worker_process_shutdown.connect
def _stop_process_runtime(**_: Any) -> None:
    stop_sweeper()
    stop_runtime()


@worker_ready.connect
def _start_sweep_in_solo_worker(sender: Any = None, **_: Any) -> None:
    # The solo pool has no child processes: the worker itself sweeps.
    pool = getattr(sender, "pool", None)
    if pool is not None and "solo" in type(pool).__module__:
        start_sweeper()


@worker_shutdown.connect
def _stop_sweep(**_: Any) -> None:
    stop_sweeper()
