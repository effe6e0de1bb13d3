"""The process's async Redis client (REDIS_URL, or the embedded server)."""

from __future__ import annotations

from typing import Callable, Optional

import redis.asyncio as aioredis

from app.core.config import Settings, get_settings

# What an unset REDIS_URL means: registered by app/dev (embedded Redis).
_default_redis_url: Optional[Callable[[Settings], str]] = None


def set_default_redis_url(provider: Optional[Callable[[Settings], str]]) -> None:
    global _default_redis_url
    _default_redis_url = provider


def resolve_redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    if _default_redis_url is None:
        raise RuntimeError("REDIS_URL is not set and no embedded default is registered")
    return _default_redis_url(settings)


_client: Optional[aioredis.Redis] = None


def get_redis() -> aioredis.Redis:
    global _client
    if _client is None:
        settings = get_settings()
        _client = aioredis.Redis.from_url(
            resolve_redis_url(settings),
            socket_timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_timeout_seconds,
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
