"""The outbox sweep: publish again what a crash or a broker outage left behind.

A thread in each worker process (rows are claimed with SKIP LOCKED, so any
number may sweep) republishes jobs that should be in the broker but may not
be: queued or retrying and unpublished for `job_publish_grace_seconds`, or
`running` past the hard time limit plus that grace with no live run holding
their lock. This covers a Redis restart, a crash between commit and publish,
and a dead worker. Duplicate messages are harmless: a run claims the row first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta
from typing import Optional

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.config import Settings, get_settings
from app.jobs import metrics, repository
from app.jobs.publisher import OutboundMessage, Publisher

logger = logging.getLogger(__name__)


async def sweep_once(
    sessionmaker: async_sessionmaker[AsyncSession], publisher: Publisher, settings: Settings
) -> int:
    """One pass; returns how many jobs were published. Rows are marked (and
    committed) first: a worker that gets the message at once must find them
    unlocked. If the broker fails in between, they wait one more grace period."""
    if not publisher.is_broker_reachable():
        logger.info("sweep: broker unreachable, will try again")
        return 0
    async with sessionmaker() as session:
        stale = await repository.claim_stale_jobs(
            session,
            grace=timedelta(seconds=settings.job_publish_grace_seconds),
            lease=timedelta(
                seconds=settings.job_time_limit_seconds + settings.job_publish_grace_seconds
            ),
            limit=settings.job_sweep_batch,
        )
        await session.commit()
    if not stale:
        return 0
    await asyncio.get_running_loop().run_in_executor(
        None, publisher.publish, [OutboundMessage(job_id, kind) for job_id, kind in stale]
    )
    metrics.JOBS_REPUBLISHED.inc(len(stale))
    logger.info("sweep: published %d job(s) again", len(stale))
    return len(stale)


class Sweeper:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="keel-outbox-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _main(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        from app.core.db import build_engine

        engine = build_engine(
            self.settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 1})
        )
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        publisher = Publisher()
        try:
            while not self._stop.is_set():
                try:
                    await sweep_once(sessionmaker, publisher, self.settings)
                except (DBAPIError, OSError, ConnectionError) as exc:
                    logger.warning("sweep failed: %s", exc)
                    publisher.reset()
                except Exception:  # noqa: BLE001 - keep sweeping whatever happens
                    logger.exception("sweep failed")
                    publisher.reset()
                await asyncio.get_running_loop().run_in_executor(
                    None, self._stop.wait, self.settings.job_sweep_interval_seconds
                )
        finally:
            publisher.reset()
            await engine.dispose()


_sweeper: Optional[Sweeper] = None


def start_sweeper() -> None:
    global _sweeper
    if _sweeper is None:
        _sweeper = Sweeper(get_settings())
        _sweeper.start()


def stop_sweeper() -> None:
    global _sweeper
    if _sweeper is not None:
        _sweeper.stop()
    _sweeper = None
