"""The transactional outbox: jobs are rows, published to the broker only after commit.

`enqueue_job` writes the row in the caller's transaction and remembers it on
the session. When that session commits, an `after_commit` hook hands the ids
to the relay, a background thread that publishes them to Redis. Nothing is
published for a transaction that rolls back, and the event loop never waits
on the broker. If publishing fails (broker down, process dies first), the
row stays `queued` and the sweep (app/jobs/sweep.py) publishes it later.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Optional

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.jobs import repository
from app.jobs.models import Job
from app.jobs.publisher import OutboundMessage, Publisher

logger = logging.getLogger(__name__)

_PENDING_KEY = "keel_outbox_pending"
# How long the relay waits for more jobs before publishing what it has: the
# latency it adds to a job, in exchange for sharing broker messages (see
# app/jobs/publisher.py) when jobs arrive faster than one per few ms.
LINGER_SECONDS = 0.05


async def enqueue_job(
    session: AsyncSession, *, kind: str, payload: Dict[str, Any], owner_id: Optional[int] = None
) -> Job:
    """Write a job row in the caller's transaction; it is published only after
    that transaction commits (and never if it rolls back). Payloads hold ids and
    small values only: tasks reload their data."""
    job = await repository.insert_job(session, kind=kind, payload=payload, owner_id=owner_id)
    publish_after_commit(session, OutboundMessage(job.id, job.kind))
    return job


def publish_after_commit(session: AsyncSession, message: OutboundMessage) -> None:
    session.sync_session.info.setdefault(_PENDING_KEY, []).append(message)


class DirectOutbox:
    """For a request whose only write is one job row: the row is written by
    one autocommit statement (the statement is the whole transaction) and
    handed to the relay as soon as that statement returns.

    One round trip and SQL as the driver takes it (`$1` parameters, no
    statement compilation), instead of BEGIN, the statements and COMMIT
    through the ORM. SQLAlchemy still runs it, so a broken connection is
    invalidated and reported like any other database error.
    """

    def __init__(self) -> None:
        self._engine: Any = None
        self._autocommit: Any = None

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        from app.core.db import db

        if self._engine is not db.engine:  # configured (again) since last time
            self._engine = db.engine
            self._autocommit = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        async with self._autocommit.connect() as connection:
            result = await connection.exec_driver_sql(sql, args)
            return result.mappings().first()

    async def publish(self, message: OutboundMessage) -> None:
        """Hand the committed job to the relay."""
        relay.submit([message])

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session for the rare request that needs more than the one
        statement, committed when the block ends without an error."""
        from app.core.db import db

        async with db.sessionmaker() as session:
            yield session
            await session.commit()


class SessionOutbox(DirectOutbox):
    """The same inside a session's transaction, published after its commit
    (tests point `get_direct_outbox` at their rolled-back session)."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__()
        self.session = session

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        connection = await self.session.connection()
        return (await connection.exec_driver_sql(sql, args)).mappings().first()

    async def publish(self, message: OutboundMessage) -> None:
        # The session's commit stands for the end of the request's transaction.
        publish_after_commit(self.session, message)
        await self.session.commit()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        yield self.session
        await self.session.commit()


_direct_outbox = DirectOutbox()


async def get_direct_outbox() -> DirectOutbox:
    """FastAPI dependency (overridable in tests)."""
    return _direct_outbox


@event.listens_for(Session, "after_commit")
def _hand_to_relay(session: Session) -> None:
    pending: List[OutboundMessage] = session.info.pop(_PENDING_KEY, [])
    if pending:
        relay.submit(pending)


@event.listens_for(Session, "after_rollback")
def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


class Relay:
    """Publishes messages from a queue in one daemon thread, batching what
    accumulates (one broker connection, reused). Failures are logged and left
    to the sweep."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Optional[OutboundMessage]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._pid: Optional[int] = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._inflight = 0
        self._broker_url: Optional[str] = None
        self._generation = 0

    def use_broker(self, broker_url: Optional[str]) -> None:
        """Publish to this broker from now on (default: the Celery app's)."""
        with self._lock:
            self._broker_url = broker_url
            self._generation += 1

    def submit(self, messages: List[OutboundMessage]) -> None:
        self._ensure_thread()
        with self._lock:
            self._inflight += len(messages)
            self._idle.clear()
        for message in messages:
            self._queue.put(message)

    def wait_idle(self, timeout: float) -> bool:
        """Block until everything submitted so far was published or given up on."""
        return self._idle.wait(timeout)

    def _ensure_thread(self) -> None:
        # After a fork the thread (and its broker connection) belong to the parent.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._queue = queue.SimpleQueue()
                self._inflight = 0
                self._idle.set()
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="keel-outbox-relay", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        generation = self._generation
        publisher = Publisher(self._broker_url)
        while True:
            first = self._queue.get()
            if generation != self._generation:
                publisher.reset()
                generation = self._generation
                publisher = Publisher(self._broker_url)
            batch = [first]
            # Linger a moment so that a burst goes out in few messages.
            deadline = time.monotonic() + LINGER_SECONDS
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            messages = [m for m in batch if m is not None]
            try:
                publisher.publish(messages)
            except Exception:  # noqa: BLE001 - the thread must survive any publish failure
                logger.warning(
                    "outbox relay: could not publish %d job(s); the sweep will retry",
                    len(messages),
                    exc_info=True,
                )
                publisher.reset()
            finally:
                with self._lock:
                    self._inflight -= len(batch)
                    if self._inflight <= 0:
                        self._inflight = 0
                        self._idle.set()


relay = Relay()
