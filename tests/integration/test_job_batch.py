"""A job batch that runs out of time hands its unstarted jobs back untouched
(whatever the number of lanes running its jobs at once)."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs import repository, runner
from app.jobs.models import QUEUED, SUCCEEDED, Job
from app.jobs.outbox import relay

SLOW_KIND = "tests.slow_batch_job"


@pytest.mark.parametrize("lanes", [1, 2])
async def test_a_batch_out_of_time_hands_the_rest_back_untouched(
    committed_db: Any, settings: Any, lanes: int
) -> None:
    ran: List[int] = []

    async def slow(session: AsyncSession, job: Job) -> None:
        ran.append(job.id)
        await asyncio.sleep(0.2)

    # Budget = half the slack between job timeout and time limit = 0.1 s.
    tight = settings.model_copy(update={"job_time_limit_seconds": 2, "job_timeout_seconds": 1.8})
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
