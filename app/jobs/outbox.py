"""The transactional outbox: jobs are rows, published to the broker only after commit.

`enqueue_job` writes the row in the caller's transaction; on commit a hook
hands the ids to the relay thread, which publishes them (the event loop never
waits on the broker). If publishing fails, the row stays `queued` and the
sweep (app/jobs/sweep.py) publishes it later.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Dict, List, Optional

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.jobs import repository
from app.jobs.models import Job
from app.jobs.publisher import OutboundMessage, Publisher

logger = logging.getLogger(__name__)

_PENDING_KEY = "keel_outbox_pending"
# How long the relay waits for more jobs before publishing: latency traded for
# shared broker messages (app/jobs/publisher.py) when jobs arrive in bursts.
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
