"""Readiness: can this process serve real traffic right now?"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Dict

from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.core.db import db
from app.core.redis import get_redis

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2.0

Check = Callable[[], Awaitable[None]]


async def check_database() -> None:
    async with db.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def check_broker() -> None:
    await get_redis().ping()


async def check_model() -> None:
    from app.ml.serving import model_server

    if not model_server.is_ready:
        raise RuntimeError("no model loaded")


CHECKS: Dict[str, Check] = {
    "database": check_database,
    "broker": check_broker,
    "model": check_model,
}


async def _run(name: str, check: Check) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        return "ok"
    except asyncio.TimeoutError:
        logger.warning("readiness check %s timed out", name)
        return "timeout"
    except (SQLAlchemyError, RedisError, OSError, RuntimeError) as exc:
        logger.warning("readiness check %s failed: %s", name, type(exc).__name__)
        return f"unavailable: {type(exc).__name__}"


async def run_checks() -> Dict[str, str]:
    names = list(CHECKS)
    results = await asyncio.gather(*(_run(name, CHECKS[name]) for name in names))
    return dict(zip(names, results))
