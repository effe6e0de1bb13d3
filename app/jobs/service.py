"""Jobs: the outbox API for other domains, and the dead-letter operations."""

from __future__ import annotations

from typing import List, Optional, Tuple

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.core.security import Principal, utcnow
from app.jobs import repository
from app.jobs.errors import JobNotDead
from app.jobs.models import DEAD, QUEUED, Job
from app.jobs.outbox import enqueue_job, publish_after_commit
from app.jobs.publisher import OutboundMessage

__all__ = ["enqueue_job", "get_job", "list_jobs", "retry_job"]


async def get_job(session: AsyncSession, *, job_id: int, viewer: Principal) -> Job:
    """A job its owner or a superuser may see. Raises NotFound otherwise."""
    job = await repository.get_job(session, job_id)
    if job is None or not (viewer.is_superuser or job.owner_id == viewer.id):
        raise NotFound("Job not found")
    return job


async def list_jobs(
    session: AsyncSession, *, status: Optional[str], limit: int, offset: int
) -> Tuple[List[Job], int]:
    """Jobs newest first, optionally by status (status=dead: the dead letters)."""
    return await repository.list_jobs(session, status=status, limit=limit, offset=offset)


async def retry_job(session: AsyncSession, *, job_id: int) -> Job:
    """Queue a dead job again with a fresh retry budget; published after commit.
    Raises NotFound, JobNotDead (the row is locked, so two retries cannot both win)."""
    job = await repository.lock_job(session, job_id, skip_locked=False)
    if job is None:
        raise NotFound("Job not found")
    if job.status != DEAD:
        raise JobNotDead()
    now = utcnow()
    job.status = QUEUED
    job.attempts = 0
    job.deliveries = 0
    job.available_at = now
    job.published_at = now
    await session.flush()
    await session.refresh(job)
    publish_after_commit(session, OutboundMessage(job.id, job.kind))
    return job
