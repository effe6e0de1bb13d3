"""Running a transaction again after a deadlock or serialization failure
(PostgreSQL may report one even where locks are taken in a fixed order): the
failed attempt committed nothing, so a retry never applies its effects twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Awaitable, Callable, TypeVar

import asyncpg
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import sqlstate

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
MAX_ATTEMPTS = 5

TRANSACTION_RETRIES = Counter(
    "keel_ledger_transaction_retries_total",
    "Transactions rolled back and run again after a deadlock or serialization failure",
)


def is_retryable(error: Exception) -> bool:
    return sqlstate(error) in RETRYABLE_SQLSTATES


async def run_with_retry(session: AsyncSession, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt` (one whole transaction's work in `session`); on a
    deadlock or serialization failure roll back and run it again."""
    for number in range(1, MAX_ATTEMPTS + 1):
        try:
            return await attempt()
        except (DBAPIError, asyncpg.PostgresError) as error:
            if not is_retryable(error) or number == MAX_ATTEMPTS:
                raise
            TRANSACTION_RETRIES.inc()
            logger.warning("transaction retry %d after sqlstate %s", number, sqlstate(error))
            await session.rollback()
            await asyncio.sleep(random.uniform(0, 0.005 * 2**number))
    raise AssertionError("unreachable")  # pragma: no cover
