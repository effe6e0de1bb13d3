"""A job batch that runs out of time hands its unstarted jobs back untouched
(whatever the number of lanes running its jobs at once)."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs import repository, runner
from app.jobs.models import QUEUED, RUNNING, SUCCEEDED, Job
from app.jobs.outbox import relay

SLOW_KIND = "tests.slow_batch_job"
TRACKED_KIND = "tests.tracked_batch_job"


@pytest.mark.parametrize("lanes", [1, 2])
async def test_a_batch_out_of_time_hands_the_rest_back_untouched(
    committed_db: Any, settings: Any, lanes: int
) -> None:
    ran: List[int] = []

    async def slow(session: AsyncSession, job: Job) -> None:
        ran.append(job.id)
        await asyncio.sleep(1.5)

    # Budget = half the slack between job timeout and time limit = 1 s: each
    # lane's first job starts well inside it even on a loaded machine, and
    # finishes after it.
    tight = settings.model_copy(update={"job_time_limit_seconds": 20, "job_timeout_seconds": 18})
    runner.HANDLERS[SLOW_KIND] = slow
    try:
        async with AsyncSession(committed_db) as session:
            jobs = [
                await repository.insert_job(session, kind=SLOW_KIND, payload={}, owner_id=None)
                for _ in range(lanes + 2)
            ]
            await session.commit()
        ids = [job.id for job in jobs]

        outcomes = await runner.execute_batch(committed_db, ids, SLOW_KIND, tight, lanes=lanes)

        # One job per lane started at once; none after the budget was spent.
        assert sorted(ran) == ids[:lanes]
        assert [outcome.status for outcome in outcomes] == [SUCCEEDED] * lanes
        async with AsyncSession(committed_db) as session:
            rows = [await repository.get_job(session, job_id) for job_id in ids]
        assert [row.status for row in rows if row] == [SUCCEEDED] * lanes + [QUEUED, QUEUED]
        assert [row.attempts for row in rows if row] == [1] * lanes + [0, 0]
        # The hand-back went to the relay (published, or left for the sweep).
        assert relay.wait_idle(timeout=10)
    finally:
        runner.HANDLERS.pop(SLOW_KIND, None)


async def _max_jobs_at_once(committed_db: Any, settings: Any, running_first: bool) -> int:
    in_flight: List[int] = [0, 0]  # now, most so far

    async def tracked(session: AsyncSession, job: Job) -> None:
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
        await asyncio.sleep(0.05)
        in_flight[0] -= 1

    runner.HANDLERS[TRACKED_KIND] = tracked
    try:
        async with AsyncSession(committed_db) as session:
            jobs = [
                await repository.insert_job(session, kind=TRACKED_KIND, payload={}, owner_id=None)
                for _ in range(4)
            ]
            if running_first:
                # As a worker that died mid-run leaves it: running, unlocked.
                await session.execute(
                    update(Job).where(Job.id == jobs[0].id).values(status=RUNNING, deliveries=1)
                )
            await session.commit()
        ids = [job.id for job in jobs]
        outcomes = await runner.execute_batch(committed_db, ids, TRACKED_KIND, settings, lanes=4)
        assert [outcome.status for outcome in outcomes] == [SUCCEEDED] * 4
        return in_flight[1]
    finally:
        runner.HANDLERS.pop(TRACKED_KIND, None)


async def test_a_batch_runs_its_jobs_side_by_side(committed_db: Any, settings: Any) -> None:
    assert await _max_jobs_at_once(committed_db, settings, running_first=False) == 4


async def test_a_batch_with_a_lost_run_in_it_runs_one_job_at_a_time(
    committed_db: Any, settings: Any
) -> None:
    # A redelivery after a crash: the job that may have caused it must not
    # take other jobs down with it again.
    assert await _max_jobs_at_once(committed_db, settings, running_first=True) == 1
