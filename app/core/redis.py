"""The process's async Redis client (REDIS_URL, or the embedded server)."""

from __future__ import annotations

from typing import Optional

import redis.asyncio as aioredis

from app.core.config import Settings, get_settings


def resolve_redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    from app.dev.embedded import embedded_redis_url

    return embedded_redis_url(settings.data_dir)


_client: Optional[aioredis.Redis] = None


def get_redis() -> aioredis.Redis:
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(
            resolve_redis_url(get_settings()),
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            health_check_interval=30,
        )
    return _client


def set_redis(client: Optional[aioredis.Redis]) -> None:
    global _client
    _client = client


async def close_redis() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
    _client = None
