"""Failed-attempt counters in Redis (per account and per client address).

Fails open: when Redis is unreachable the request proceeds and a warning is
logged, so a cache outage never locks everyone out.
"""

from __future__ import annotations

import logging
from typing import Optional

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
        try:
            pipe = get_redis().pipeline(transaction=False)
            for subject in subjects:
                key = self._key(subject)
                pipe.incr(key)
                pipe.expire(key, self.window_seconds, nx=True)
            await pipe.execute()
        except (RedisError, OSError):
            logger.warning("throttle %s: redis unavailable, failure not counted", self.scope)

    async def reset(self, subject: str) -> None:
        try:
            await get_redis().delete(self._key(subject))
        except (RedisError, OSError):
            logger.warning("throttle %s: redis unavailable, reset skipped", self.scope)


def client_address(host: Optional[str]) -> str:
    return f"ip:{host or 'unknown'}"
