"""Password hashing (off the event loop) and JWT encoding/decoding."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import secrets
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Optional

import bcrypt
import jwt

from app.core.config import Settings, get_settings

MAX_PASSWORD_BYTES = 72
ACCESS = "access"
REFRESH = "refresh"


@dataclass(frozen=True)
class Principal:
    """The caller, as `CurrentUser` (app/auth/dependencies.py) resolves a
    bearer token: the account's id, standing and profile (email and name,
    which never change once the account exists), not its row."""

    id: int
    is_superuser: bool
    tokens_valid_after: Optional[datetime]
    email: str
    name: str


@functools.cache
def stand_in_hash(rounds: int) -> bytes:
    """A real hash of a random password at `rounds`, made once per cost.
    Checking a password against it when the account does not exist costs
    what a real check costs (bcrypt's time is set by the cost in the hash),
    so timing does not reveal which emails have accounts."""
    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=rounds))


def _hash_sync(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def _verify_sync(password: str, hashed: Optional[str], rounds: int) -> bool:
    raw = password.encode("utf-8")
    if len(raw) > MAX_PASSWORD_BYTES:
        return False
    if hashed is None:
        bcrypt.checkpw(raw, stand_in_hash(rounds))
        return False
    return bcrypt.checkpw(raw, hashed.encode("ascii"))


def _start_hash_thread() -> None:
    # bcrypt releases the GIL but still competes for CPU with the event-loop
    # thread. On Linux a thread's nice value is its own: niced hashing threads
    # soak up idle cores without delaying the loop when it has work.
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass  # not Linux, or not permitted: plain priority is still correct


_hash_pool = ThreadPoolExecutor(
    max_workers=os.cpu_count() or 1,
    thread_name_prefix="bcrypt",
    initializer=_start_hash_thread,
)


async def hash_password(password: str, settings: Optional[Settings] = None) -> str:
    """bcrypt off the event loop, in a bounded pool of low-priority threads."""
    rounds = (settings or get_settings()).bcrypt_rounds
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_hash_pool, _hash_sync, password, rounds)


async def verify_password(
    password: str, hashed: Optional[str], settings: Optional[Settings] = None
) -> bool:
    """Constant-cost check; `hashed=None` (no such user) still spends a check
    at the configured cost (BCRYPT_ROUNDS)."""
    rounds = (settings or get_settings()).bcrypt_rounds
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_hash_pool, _verify_sync, password, hashed, rounds)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def create_token(
    subject: str,
    token_type: str,
    lifetime: timedelta,
    *,
    settings: Optional[Settings] = None,
    extra: Optional[Dict[str, Any]] = None,
    jti: Optional[str] = None,
) -> str:
    settings = settings or get_settings()
    now = utcnow()
    claims: Dict[str, Any] = {
        "sub": subject,
        "type": token_type,
        # Sub-second iat: a session revoked at t (password reset) must reject a
        # token issued earlier in the same second, and accept one issued after.
        "iat": round(now.timestamp(), 6),
        "exp": int((now + lifetime).timestamp()),
        "jti": jti or uuid.uuid4().hex,
    }
    if extra:
        claims.update(extra)
    return jwt.encode(claims, settings.secret_key, algorithm=settings.jwt_algorithm)


def decode_token(
    token: str, expected_type: str, settings: Optional[Settings] = None
) -> Dict[str, Any]:
    """Verify signature (pinned algorithm), expiry and type. Raises jwt.InvalidTokenError."""
    settings = settings or get_settings()
    claims: Dict[str, Any] = jwt.decode(
        token,
        settings.secret_key,
        algorithms=[settings.jwt_algorithm],
        options={"require": ["sub", "exp", "iat", "jti", "type"]},
    )
    if claims.get("type") != expected_type:
        raise jwt.InvalidTokenError("wrong token type")
    return claims


def sha256_hex(value: str) -> str:
    """Digest for storing secrets (refresh/reset tokens) we only need to compare."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)
