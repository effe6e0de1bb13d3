"""All SQL of the jobs domain."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from sqlalchemy import Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import PageQuery, fetch_page
from app.jobs.models import QUEUED, RETRYING, RUNNING, SUCCEEDED, Job

# The hot paths (enqueue, claim, success) use Core statements built once: the
# ORM's per-call work costs more CPU than the round trips.
_jobs: Table = Job.__table__  # type: ignore[assignment]
_COPIED = ("id", "kind", "payload", "owner_id", "created_at")
_INSERT = insert(_jobs).returning(*(_jobs.c[name] for name in _COPIED))

# Written for the driver (see claim_due_job); `updated_at` by hand, as the
# ORM's onupdate does not apply here.
_CLAIM_DUE_SQL = f"""
UPDATE jobs SET status = '{RUNNING}', deliveries = deliveries + 1, updated_at = now()
WHERE id = (SELECT id FROM jobs WHERE id = $1 FOR UPDATE SKIP LOCKED)
  AND kind = $2 AND status IN ('{QUEUED}', '{RETRYING}') AND available_at <= $3
RETURNING deliveries, id, kind, payload, owner_id, created_at
"""

_SUCCEED_RUN = (
    update(_jobs)
    .where(
        _jobs.c.id == bindparam("p_id"),
        _jobs.c.status == RUNNING,
        _jobs.c.deliveries == bindparam("p_delivery"),
    )
    .values(status=SUCCEEDED, attempts=_jobs.c.attempts + 1, last_error=None)
    .returning(_jobs.c.id)
)


def _snapshot(values: Mapping[Any, Any]) -> Job:
    # A detached copy of what a task may read; never added to a session.
    return Job(**{name: values[name] for name in _COPIED})


async def insert_job(
    session: AsyncSession, *, kind: str, payload: Dict[str, Any], owner_id: Optional[int]
) -> Job:
    """Insert a queued job in the session's transaction; returns a detached copy."""
    row = (
        await session.execute(
            _INSERT,
            {
                "kind": kind,
                "payload": payload,
                "owner_id": owner_id,
                "status": QUEUED,
                "attempts": 0,
                "deliveries": 0,
            },
        )
    ).one()
    return _snapshot(row._mapping)


async def get_job(session: AsyncSession, job_id: int) -> Optional[Job]:
    return await session.get(Job, job_id)


async def lock_job(session: AsyncSession, job_id: int, *, skip_locked: bool) -> Optional[Job]:
    """The job row, locked FOR UPDATE (None if missing, or locked when
    skip_locked). A run holds this lock while it works, so a lock that can be
    taken on a `running` row means the run that claimed it is gone."""
    stmt = (
        select(Job)
        .where(Job.id == job_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def claim_due_job(
    session: AsyncSession, job_id: int, *, kind: str, due_before: datetime
) -> Optional[Tuple[int, Job]]:
    """The common claim in one statement, in the session's transaction (the
    caller commits it before the job runs): a queued/retrying job of this
    kind, due and not locked (SKIP LOCKED), becomes `running` with one more
    delivery. Returns that delivery number and a detached copy of the job,
    or None when the careful path (lock_job) must decide."""
    connection = await session.connection()
    # numeric_dollar is the asyncpg dialect's paramstyle: `$n` SQL as written.
    result = await connection.exec_driver_sql(_CLAIM_DUE_SQL, (job_id, kind, due_before))
    row = result.first()
    if row is None:
        return None
    return row.deliveries, _snapshot(row._mapping)


async def any_running(session: AsyncSession, job_ids: Sequence[int]) -> bool:
    """Whether any of these jobs is `running` (a run in progress elsewhere, or
    one that died with its worker)."""
    statement = select(
        select(_jobs.c.id)
        .where(_jobs.c.id.in_([int(job_id) for job_id in job_ids]), _jobs.c.status == RUNNING)
        .exists()
    )
    return bool((await session.execute(statement)).scalar())


def detached_copy(job: Job) -> Job:
    return _snapshot({name: getattr(job, name) for name in _COPIED})


async def lock_run_as_succeeded(session: AsyncSession, job_id: int, *, delivery: int) -> bool:
    """Lock the row of the run `delivery` and record its success, in the
    caller's transaction, before the job's effects: the effects and this
    row commit or roll back together. False if that run no longer owns the
    row (another run took over); waits while another transaction holds it."""
    params = {"p_id": job_id, "p_delivery": delivery}
    # On the session's Core connection: the ORM's execute adds nothing here.
    connection = await session.connection()
    return (await connection.execute(_SUCCEED_RUN, params)).first() is not None


_ALL_JOBS = PageQuery(lambda: select(Job).order_by(Job.id.desc()))
_JOBS_BY_STATUS = PageQuery(
    lambda: select(Job).where(Job.status == bindparam("status")).order_by(Job.id.desc())
)


async def list_jobs(
    session: AsyncSession, *, status: Optional[str], limit: int, offset: int
) -> Tuple[List[Job], int]:
    if status:
        return await fetch_page(
            session, _JOBS_BY_STATUS, limit=limit, offset=offset, params={"status": status}
        )
    return await fetch_page(session, _ALL_JOBS, limit=limit, offset=offset)


async def claim_stale_jobs(
    session: AsyncSession, *, grace: timedelta, lease: timedelta, limit: int
) -> List[Tuple[int, str]]:
    """Rows a broker message may have been lost for, marked as published now:
    queued/retrying, due, and not published within the grace period; or
    running, unlocked, and untouched for longer than the lease (the hard time
    limit plus the grace period: no live run lasts that long)."""
    now = func.now()
    stale = (
        select(Job.id)
        .where(
            or_(
                and_(
                    Job.status.in_((QUEUED, RETRYING)),
                    Job.available_at <= now,
                    Job.published_at <= now - grace,
                ),
                and_(Job.status == RUNNING, Job.updated_at <= now - lease),
            )
        )
        .order_by(Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(Job)
        .where(Job.id.in_(stale.scalar_subquery()))
        .values(published_at=now)
        .returning(Job.id, Job.kind)
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(stmt)).all()
    return [(row[0], row[1]) for row in rows]
