"""Authentication: login, token rotation with reuse detection, logout."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Optional, Tuple, Union

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.auth import repository
from app.auth.principal import principal_cache
from app.auth.schemas import TokenPair
from app.auth.throttle import PairThrottle, Throttle, client_address
from app.core.config import get_settings
from app.core.errors import InvalidCredentials, InvalidToken
from app.core.security import (
    ACCESS,
    Principal,
    create_token,
    new_opaque_token,
    sha256_hex,
    utcnow,
    verify_password,
)
from app.users import service as users_service
from app.users.models import User

logger = logging.getLogger(__name__)


def login_throttles() -> Tuple[PairThrottle, Throttle]:
    """Failures counted per (client address, account) pair, so nobody can lock
    an owner out from elsewhere, and per address (10x the budget), so one
    address cannot spray guesses over many accounts."""
    settings = get_settings()
    failures, seconds = settings.login_max_failures, settings.login_lockout_seconds
    per_pair = PairThrottle("login:pair", failures, seconds)
    return per_pair, Throttle("login:address", failures * 10, seconds)


def login_account_key(email: str) -> str:
    return users_service.normalize_email(email)[:320]


async def _issue_pair(
    session: AsyncSession, user: User, family_id: Optional[str] = None
) -> TokenPair:
    settings = get_settings()
    lifetime = timedelta(minutes=settings.access_token_minutes)
    access = create_token(str(user.id), ACCESS, lifetime, settings=settings)
    refresh = new_opaque_token()
    await repository.add_refresh_token(
        session,
        user_id=user.id,
        family_id=family_id or uuid.uuid4().hex,
        token_hash=sha256_hex(refresh),
        expires_at=utcnow() + timedelta(days=settings.refresh_token_days),
    )
    return TokenPair(
        access_token=access, expires_in=int(lifetime.total_seconds()), refresh_token=refresh
    )


async def login(
    session: AsyncSession, *, email: str, password: str, client_host: Optional[str]
) -> TokenPair:
    """Check credentials and start a new token family. Raises TooManyRequests
    after repeated failures, InvalidCredentials otherwise. Unknown accounts
    cost one bcrypt check too, so timing does not reveal which emails exist."""
    account_key = login_account_key(email)
    per_pair, per_address = login_throttles()
    address_key = client_address(client_host)
    await per_pair.check(per_pair.pair(address_key, account_key))
    await per_address.check(address_key)

    user = await users_service.find_user_by_email(session, email)
    valid = await verify_password(password, user.password_hash if user else None)
    if user is None or not valid or not user.is_active:
        await per_pair.record_pair_failure(address_key, account_key)
        await per_address.record_failure(address_key)
        raise InvalidCredentials()
    # Only this pair: the owner's success must not give an attacker at
    # another address fresh guesses.
    await per_pair.reset(per_pair.pair(address_key, account_key))
    return await _issue_pair(session, user)


async def refresh(session: AsyncSession, *, refresh_token: str) -> TokenPair:
    """Rotate a refresh token: the presented one stops working, a new pair is
    returned in the same family. Presenting an already-rotated token is taken
    as theft: the whole family is revoked. Raises InvalidToken."""
    now = utcnow()
    stored = await repository.get_refresh_token_for_update(session, sha256_hex(refresh_token))
    if stored is None or stored.revoked_at is not None or stored.expires_at <= now:
        raise InvalidToken()
    if stored.rotated_at is not None:
        logger.warning("refresh token reuse detected; revoking family %s", stored.family_id)
        await repository.revoke_family(session, stored.family_id, now)
        # The revocation must survive the error response: commit it here.
        await session.commit()
        raise InvalidToken()
    user = await users_service.get_user(session, stored.user_id)
    if not user.is_active:
        raise InvalidToken()
    stored.rotated_at = now
    return await _issue_pair(session, user, family_id=stored.family_id)


async def logout(
    session: AsyncSession, *, user: Union[User, Principal], refresh_token: str
) -> None:
    """Revoke the login (token family) the refresh token belongs to. Idempotent:
    unknown, foreign or already revoked tokens are accepted silently."""
    stored = await repository.get_refresh_token_for_update(session, sha256_hex(refresh_token))
    if stored is not None and stored.user_id == user.id:
        await repository.revoke_family(session, stored.family_id, utcnow())


async def revoke_sessions(session: AsyncSession, user: User) -> None:
    """End every session of a user: refresh families and outstanding access tokens."""
    now = utcnow()
    await repository.revoke_all_for_user(session, user.id, now)
    user.tokens_valid_after = now
    # Dropped when the transaction commits, not now: a request reading the
    # standing before the commit gets the old one and would cache it for
    # AUTH_CACHE_SECONDS after the revocation took effect.
    session.sync_session.info.setdefault(_STANDINGS_TO_DROP, set()).add(user.id)


_STANDINGS_TO_DROP = "keel.standings_to_drop"


@event.listens_for(Session, "after_commit")
def _drop_committed_standings(session: Session) -> None:
    # A rolled-back revocation leaves its ids here; dropping them at a later
    # commit of the same session costs one standing read, nothing more.
    for user_id in session.info.pop(_STANDINGS_TO_DROP, ()):
        principal_cache.invalidate(user_id)
