"""Who is calling, without a database round trip on the hot path.

`CurrentPrincipal` is for read-only endpoints that need the caller's identity
but none of the user's data (model predictions). It verifies the JWT, then
checks the account's standing (active, sessions not revoked since the token
was issued) against a short-lived per-process cache of that standing,
loading it from the database in its own short session on a miss.

Consequence, by design: in *other* processes a deactivation or session
revocation takes effect within `AUTH_CACHE_SECONDS` (default 2 s); the
process that performs it drops its entry at once. Endpoints that change
data keep using `CurrentUser`, which reads the user in the request's
transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import AsyncContextManager, Callable, Dict, Optional, Tuple

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import get_settings
from app.core.db import db
from app.core.errors import InvalidToken
from app.core.schemas import MAX_DB_ID
from app.core.security import ACCESS, decode_token
from app.users import service as users_service


@dataclass(frozen=True)
class Principal:
    id: int
    is_superuser: bool
    tokens_valid_after: Optional[datetime]


class PrincipalCache:
    def __init__(self) -> None:
        self._entries: Dict[int, Tuple[Optional[Principal], float]] = {}

    def get(self, user_id: int) -> Tuple[bool, Optional[Principal]]:
        entry = self._entries.get(user_id)
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, user_id: int, principal: Optional[Principal], ttl: float) -> None:
        if ttl > 0:
            if len(self._entries) > 100_000:  # bound memory under token spraying
                self._entries.clear()
            self._entries[user_id] = (principal, time.monotonic() + ttl)

    def invalidate(self, user_id: int) -> None:
        self._entries.pop(user_id, None)

    def clear(self) -> None:
        self._entries.clear()


principal_cache = PrincipalCache()


def _open_session() -> AsyncContextManager[AsyncSession]:
    return db.sessionmaker()


# Tests point this at their own (rolled-back) session.
open_session: Callable[[], AsyncContextManager[AsyncSession]] = _open_session


async def _load_principal(user_id: int) -> Optional[Principal]:
    async with open_session() as session:
        user = await users_service.find_active_user(session, user_id)
        if user is None:
            return None
        return Principal(user.id, user.is_superuser, user.tokens_valid_after)


async def authenticate_principal(token: str) -> Principal:
    """Resolve a bearer token to the caller's identity. Raises InvalidToken."""
    try:
        claims = decode_token(token, ACCESS)
        user_id = int(claims["sub"])
        if not 0 < user_id <= MAX_DB_ID:
            raise ValueError("subject out of range")
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise InvalidToken() from None
    found, principal = principal_cache.get(user_id)
    if not found:
        principal = await _load_principal(user_id)
        principal_cache.put(user_id, principal, get_settings().auth_cache_seconds)
    if principal is None:
        raise InvalidToken()
    valid_after = principal.tokens_valid_after
    if valid_after is not None and claims["iat"] < valid_after.timestamp():
        raise InvalidToken()
    return principal
