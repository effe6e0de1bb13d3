"""All SQL of the jobs domain."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.models import QUEUED, RETRYING, RUNNING, SUCCEEDED, Job


async def insert_job(
    session: AsyncSession, *, kind: str, payload: Dict[str, Any], owner_id: Optional[int]
) -> Job:
    job = Job(
        kind=kind, payload=payload, owner_id=owner_id, status=QUEUED, attempts=0, deliveries=0
    )
    session.add(job)
    await session.flush()
    return job


async def get_job(session: AsyncSession, job_id: int) -> Optional[Job]:
    return await session.get(Job, job_id)


async def lock_job(session: AsyncSession, job_id: int, *, skip_locked: bool) -> Optional[Job]:
    """The job row, locked FOR UPDATE (None if missing, or locked when skip_locked).

    A run holds this lock while it works, so a lock that can be taken on a
    `running` row means the run that claimed it is gone.
    """
    stmt = (
        select(Job)
        .where(Job.id == job_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def claim_due_job(
    session: AsyncSession, job_id: int, *, kind: str, due_before: datetime
) -> Optional[int]:
    """The common claim in one statement: a queued/retrying job of this kind,
    due before `due_before` and not locked by anyone (SKIP LOCKED), becomes
    `running` with one more delivery. Returns that delivery number, or None
    when the row is missing, locked, or needs the careful path (lock_job)."""
    unlocked = (
        select(Job.id).where(Job.id == job_id).with_for_update(skip_locked=True).scalar_subquery()
    )
    stmt = (
        update(Job)
        .where(
            Job.id == unlocked,
            Job.kind == kind,
            Job.status.in_((QUEUED, RETRYING)),
            Job.available_at <= due_before,
        )
        .values(status=RUNNING, deliveries=Job.deliveries + 1)
        .returning(Job.deliveries)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def mark_succeeded(session: AsyncSession, job_id: int) -> None:
    """Record success (in the caller's transaction, with the job's effects)."""
    stmt = (
        update(Job)
        .where(Job.id == job_id)
        .values(status=SUCCEEDED, attempts=Job.attempts + 1, last_error=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(stmt)


async def list_jobs(
    session: AsyncSession, *, status: Optional[str], limit: int, offset: int
) -> Tuple[List[Job], int]:
    filters = [Job.status == status] if status else []
    total = (await session.execute(select(func.count(Job.id)).where(*filters))).scalar_one()
    stmt = select(Job).where(*filters).order_by(Job.id.desc()).limit(limit).offset(offset)
    items: Sequence[Job] = (await session.execute(stmt)).scalars().all()
    return list(items), int(total)


async def claim_stale_jobs(
    session: AsyncSession, *, grace: timedelta, lease: timedelta, limit: int
) -> List[Tuple[int, str]]:
    """Rows a broker message may have been lost for, marked as published now.

    - queued/retrying, due, and not published within the grace period;
    - running and untouched for longer than the lease (the hard time limit
      plus the grace period: no live run lasts that long), and not locked
      by a run (SKIP LOCKED).
    """
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
