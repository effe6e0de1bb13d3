"""Sends job messages to the Celery broker. Messages carry only job ids.

Jobs of one kind due now share a message (up to `MAX_JOBS_PER_MESSAGE`): the
per-message overhead dominates a small job's cost. A delayed retry goes alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboundMessage:
    job_id: int
    kind: str
    countdown: Optional[float] = None


# Small enough that a burst still spreads over several worker processes.
MAX_JOBS_PER_MESSAGE = 8


def task_messages(
    messages: Iterable[OutboundMessage],
) -> Iterator[Tuple[str, List[int], Optional[float]]]:
    """(kind, job ids, countdown) for each broker message to send."""
    pending: Dict[str, List[int]] = {}
    for message in messages:
        if message.countdown is not None:
            yield message.kind, [message.job_id], message.countdown
            continue
        ids = pending.setdefault(message.kind, [])
        ids.append(message.job_id)
        if len(ids) == MAX_JOBS_PER_MESSAGE:
            yield message.kind, pending.pop(message.kind), None
    for kind, ids in pending.items():
        yield kind, ids, None


class Publisher:
    """One broker connection, used from one thread at a time."""

    def __init__(self, broker_url: Optional[str] = None) -> None:
        self._broker_url = broker_url
        self._connection: Optional[Any] = None

    def _conn(self) -> Any:
        from app.worker import celery_app

        if self._connection is None:
            self._connection = celery_app.connection_for_write(self._broker_url)
        return self._connection

    def publish(self, messages: Iterable[OutboundMessage]) -> int:
        """Publish the jobs (batched per kind); returns how many jobs were
        published. Raises the broker's error on the first failure."""
        from app.worker import celery_app

        count = 0
        connection = self._conn()
        for kind, job_ids, countdown in task_messages(messages):
            celery_app.send_task(
                kind,
                args=job_ids,
                countdown=countdown,
                connection=connection,
                ignore_result=True,
                retry=False,
            )
            count += len(job_ids)
        return count

    def reset(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except (OSError, ConnectionError):
                logger.debug("closing a broken broker connection failed")
        self._connection = None

    def is_broker_reachable(self) -> bool:
        from kombu.exceptions import OperationalError

        try:
            self._conn().ensure_connection(max_retries=1, timeout=2)
            return True
        except (OperationalError, OSError, ConnectionError):
            self.reset()
            return False
