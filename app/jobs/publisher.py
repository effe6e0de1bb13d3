"""Sends job messages to the Celery broker. Messages carry only the job id."""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

from app.jobs.outbox import OutboundMessage

logger = logging.getLogger(__name__)


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
        """Publish each message; raises the broker's error on the first failure."""
        from app.worker import celery_app

        count = 0
        connection = self._conn()
        for message in messages:
            celery_app.send_task(
                message.kind,
                args=[message.job_id],
                countdown=message.countdown,
                connection=connection,
                ignore_result=True,
                retry=False,
            )
            count += 1
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
