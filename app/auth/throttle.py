"""Failed-attempt counters in Redis (per account, per client address, or
per (client address, account) pair).

Fails open: when Redis is unreachable the request proceeds and a warning is
logged, so a cache outage never locks everyone out.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, List, Optional, Set, cast

from redis.exceptions import RedisError

from app.core.errors import TooManyRequests
from app.core.redis import get_redis

logger = logging.getLogger(__name__)


class Throttle:
    def __init__(self, scope: str, max_failures: int, window_seconds: int) -> None:
        self.scope = scope
        self.max_failures = max_failures
        self.window_seconds = window_seconds

    def _key(self, subject: str) -> str:
        return f"throttle:{self.scope}:{subject}"

    async def check(self, *subjects: str) -> None:
        """Raise TooManyRequests (with Retry-After) if any subject is over the limit."""
        try:
            client = get_redis()
            for subject in subjects:
                key = self._key(subject)
                count = await client.get(key)
                if count is not None and int(count) >= self.max_failures:
                    ttl = await client.ttl(key)
                    raise TooManyRequests(ttl if ttl and ttl > 0 else self.window_seconds)
        except (RedisError, OSError):
            logger.warning("throttle %s: redis unavailable, failing open", self.scope)

    async def record_failure(self, *subjects: str) -> None:
        await self._count([self._key(subject) for subject in subjects])

    async def _count(self, keys: List[str], index: Optional[str] = None) -> None:
        try:
            pipe = get_redis().pipeline(transaction=False)
            for key in keys:
                # SET NX EX + INCR rather than EXPIRE NX (Redis 7 only; embedded is 6.2).
                pipe.set(key, 0, ex=self.window_seconds, nx=True)
                pipe.incr(key)
            if index is not None:
                # Outlives every pair it lists: each expires within one window.
                pipe.sadd(index, *keys)
                pipe.expire(index, self.window_seconds)
            await pipe.execute()
        except (RedisError, OSError):
            logger.warning("throttle %s: redis unavailable, failure not counted", self.scope)

    async def reset(self, subject: str) -> None:
        try:
            await get_redis().delete(self._key(subject))
        except (RedisError, OSError):
            logger.warning("throttle %s: redis unavailable, reset skipped", self.scope)


class PairThrottle(Throttle):
    """Counts per (client address, account) pair, so failures from one
    address lock that address out of the account, not the account's owner
    everywhere. Each account's pairs are indexed, so `clear_account` (a
    completed password reset) can drop them all."""

    def pair(self, address: str, account: str) -> str:
        # Address first: it never contains "|", so no account string can
        # forge another address's pair.
        return f"{address}|{account}"

    def _index(self, account: str) -> str:
        return f"throttle:{self.scope}:index:{account}"

    async def record_pair_failure(self, address: str, account: str) -> None:
        await self._count([self._key(self.pair(address, account))], index=self._index(account))

    async def clear_account(self, account: str) -> None:
        try:
            client = get_redis()
            # redis-py types the asyncio client's set commands as sync-or-async.
            keys = await cast(Awaitable[Set[Any]], client.smembers(self._index(account)))
            await client.delete(self._index(account), *keys)
        except (RedisError, OSError):
            logger.warning("throttle %s: redis unavailable, counters not cleared", self.scope)


def client_address(host: Optional[str]) -> str:
    return f"ip:{host or 'unknown'}"
