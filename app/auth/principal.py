"""Who is calling, without a database round trip on the hot path.

`CurrentUser` (app/auth/dependencies.py) runs this: verify the JWT, then
check the account's standing (active, sessions not revoked since the token
was issued) against a short-lived per-process cache, loaded by one read on a
miss. Endpoints get a `Principal` (app/core/security.py), never the row.

Revocation bound: in other processes a deactivation or session revocation
takes effect within `AUTH_CACHE_SECONDS` (0 turns the cache off); the
process that performs it drops its entry when its transaction commits. A
verified token's claims are kept until its `exp` (the standing check still
runs on every request). An entry in the second half of its life is refreshed
in the background, so a busy user's requests never wait for that read; a
load that started before a revocation never stores its result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Dict, Optional, Tuple

import jwt

from app.auth.repository import standing_read
from app.core.config import Settings, get_settings
from app.core.db import Reader, db
from app.core.errors import InvalidToken
from app.core.schemas import MAX_DB_ID
from app.core.security import ACCESS, Principal, decode_token

logger = logging.getLogger(__name__)


class PrincipalCache:
    """Standing per user id, each entry valid for `ttl` seconds and due for a
    refresh in its second half. `generation` changes on every invalidation:
    a load that started before one must not store its result."""

    def __init__(self) -> None:
        self._entries: Dict[int, Tuple[Optional[Principal], float, float]] = {}
        self.generation = 0
        self.clock: Callable[[], float] = time.monotonic

    def get(self, user_id: int) -> Tuple[bool, Optional[Principal]]:
        found, principal, _ = self.lookup(user_id)
        return found, principal

    def lookup(self, user_id: int) -> Tuple[bool, Optional[Principal], bool]:
        """(found, principal, due for a refresh)."""
        entry = self._entries.get(user_id)
        now = self.clock()
        if entry is None or entry[1] < now:
            return False, None, False
        return True, entry[0], entry[2] <= now

    def put(
        self, user_id: int, principal: Optional[Principal], ttl: float, generation: int = -1
    ) -> None:
        """Store a standing loaded while `generation` was current (default:
        now); dropped if an invalidation happened since."""
        if ttl <= 0 or (generation >= 0 and generation != self.generation):
            return
        if len(self._entries) > 100_000:  # bound memory under token spraying
            self._entries.clear()
        now = self.clock()
        self._entries[user_id] = (principal, now + ttl, now + ttl / 2)

    def invalidate(self, user_id: int) -> None:
        self.generation += 1
        self._entries.pop(user_id, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


principal_cache = PrincipalCache()


class TokenCache:
    """Verified access tokens → (user id, iat, exp), valid until `exp`. Only
    tokens that passed `decode_token` get in, so a forged token still costs
    a signature check. Emptied when full, or when the key or algorithm changes."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: Dict[str, Tuple[int, float, int]] = {}
        self._key: Tuple[str, str] = ("", "")

    def get(self, token: str, settings: Settings) -> Optional[Tuple[int, float]]:
        key = (settings.secret_key, settings.jwt_algorithm)
        if key != self._key:
            self._entries.clear()
            self._key = key
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[2] <= time.time():  # PyJWT's rule: expired once now >= exp
            del self._entries[token]
            return None
        return entry[0], entry[1]

    def put(self, token: str, user_id: int, issued_at: float, expires_at: int) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token] = (user_id, issued_at, expires_at)

    def clear(self) -> None:
        self._entries.clear()


token_cache = TokenCache()
_standing_loads: Dict[int, asyncio.Task[Optional[Principal]]] = {}


def _process_reader() -> Reader:
    return db.reader


# Where standing reads go: the process's Reader unless replaced (the suite
# replaces it with one that reads inside its rolled-back transaction).
standing_reader: Callable[[], Reader] = _process_reader


async def _load_principal(user_id: int) -> Optional[Principal]:
    """One prepared read, no ORM session: it runs every AUTH_CACHE_SECONDS / 2
    per busy user on the event loop that serves requests, where a session's
    machinery costs several times the read (bench/README.md)."""
    rows = await standing_reader().fetch(standing_read(), {"user_id": user_id})
    if not rows:
        return None
    row = rows[0]
    return Principal(
        row["id"], row["is_superuser"], row["tokens_valid_after"], row["email"], row["name"]
    )


def verify_access_token(token: str) -> Tuple[int, float]:
    """(user id, iat) of a valid access token, from the cache after the first
    verification. Raises InvalidToken."""
    settings = get_settings()
    cached = token_cache.get(token, settings)
    if cached is not None:
        return cached
    try:
        claims = decode_token(token, ACCESS, settings)
        user_id = int(claims["sub"])
        if not 0 < user_id <= MAX_DB_ID:
            raise ValueError("subject out of range")
        issued_at, expires_at = float(claims["iat"]), int(claims["exp"])
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise InvalidToken() from None
    token_cache.put(token, user_id, issued_at, expires_at)
    return user_id, issued_at


async def _refresh_standing(user_id: int) -> Optional[Principal]:
    generation = principal_cache.generation
    principal = await _load_principal(user_id)
    principal_cache.put(user_id, principal, get_settings().auth_cache_seconds, generation)
    return principal


async def _standing(user_id: int) -> Optional[Principal]:
    found, principal, refresh_due = principal_cache.lookup(user_id)
    if found:
        if refresh_due:
            _load_standing(user_id)  # in the background; this request goes on
        return principal
    # shield: a waiter that is cancelled (client gone) does not cancel the
    # read the other waiters share.
    return await asyncio.shield(_load_standing(user_id))


def _load_standing(user_id: int) -> asyncio.Task[Optional[Principal]]:
    """The user's standing read in flight, started if there is none."""
    loop = asyncio.get_running_loop()
    task = _standing_loads.get(user_id)
    if task is None or task.done() or task.get_loop() is not loop:
        task = loop.create_task(_refresh_standing(user_id))
        _standing_loads[user_id] = task
        task.add_done_callback(lambda done: _forget_load(user_id, done))
    return task


def cancel_standing_loads() -> None:
    """Cancel the standing reads in flight on this loop and forget every one
    (shutdown, before the pool goes; tests, before their loop closes)."""
    loop = asyncio.get_running_loop()
    for task in _standing_loads.values():
        if task.get_loop() is loop:
            task.cancel()
    _standing_loads.clear()


def _forget_load(user_id: int, task: asyncio.Task[Optional[Principal]]) -> None:
    if _standing_loads.get(user_id) is task:
        del _standing_loads[user_id]
    if not task.cancelled() and task.exception() is not None:
        # Raised to every waiter; a background refresh has none, so say it here.
        logger.warning("standing of user %s not refreshed: %r", user_id, task.exception())


async def authenticate_principal(token: str) -> Principal:
    """Resolve a bearer token to the caller's identity. Raises InvalidToken."""
    user_id, issued_at = verify_access_token(token)
    principal = await _standing(user_id)
    if principal is None:
        raise InvalidToken()
    valid_after = principal.tokens_valid_after
    if valid_after is not None and issued_at < valid_after.timestamp():
        raise InvalidToken()
    return principal
