"""Password reset: one-time, expiring tokens sent by email (through a job)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from datetime import timedelta
from typing import Optional, Tuple

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository
from app.auth.errors import InvalidResetToken
from app.auth.service import login_account_key, login_throttles, revoke_sessions
from app.auth.throttle import Throttle, client_address
from app.core.config import get_settings
from app.core.security import hash_password, sha256_hex, utcnow
from app.jobs.service import enqueue_job
from app.users import service as users_service

logger = logging.getLogger(__name__)

SEND_PASSWORD_RESET_EMAIL = "auth.send_password_reset_email"


def reset_token_from_nonce(nonce: str, secret_key: Optional[str] = None) -> str:
    """The emailed token: HMAC(SECRET_KEY, nonce). The database keeps the nonce
    and the token's SHA-256, neither of which is enough to reset a password."""
    key = (secret_key or get_settings().secret_key).encode()
    digest = hmac.new(key, f"password-reset:{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def reset_throttles() -> Tuple[Throttle, Throttle]:
    settings = get_settings()
    window = settings.password_reset_window_seconds
    per_account = Throttle("reset:account", settings.password_reset_max_requests, window)
    per_address = Throttle("reset:address", settings.password_reset_max_requests * 4, window)
    return per_account, per_address


async def request_password_reset(
    session: AsyncSession, *, email: str, client_host: Optional[str]
) -> None:
    """Queue a reset email if an active account has this email; do nothing
    otherwise, and return the same way in both cases (no account enumeration).
    Raises TooManyRequests when the account or the client asked too often."""
    settings = get_settings()
    account_key = login_account_key(email)
    address_key = client_address(client_host)
    per_account, per_address = reset_throttles()
    await per_account.check(account_key)
    await per_address.check(address_key)
    await per_account.record_failure(account_key)
    await per_address.record_failure(address_key)

    user = await users_service.find_user_by_email(session, email)
    if user is None or not user.is_active:
        return
    nonce = secrets.token_hex(16)
    token = await repository.add_password_reset_token(
        session,
        user_id=user.id,
        nonce=nonce,
        token_hash=sha256_hex(reset_token_from_nonce(nonce, settings.secret_key)),
        expires_at=utcnow() + timedelta(minutes=settings.password_reset_token_minutes),
    )
    await enqueue_job(
        session,
        kind=SEND_PASSWORD_RESET_EMAIL,
        payload={"user_id": user.id, "reset_token_id": token.id},
        owner_id=user.id,
    )


async def confirm_password_reset(session: AsyncSession, *, token: str, new_password: str) -> None:
    """Set a new password with a valid token. The token (and every other
    outstanding reset token of the account) stops working, and every session
    of the account is revoked, all in this transaction; the account's login
    failure counters are cleared. Raises InvalidResetToken."""
    now = utcnow()
    stored = await repository.get_password_reset_token_for_update(session, sha256_hex(token))
    if stored is None or stored.used_at is not None or stored.expires_at <= now:
        raise InvalidResetToken()
    user = await users_service.find_active_user(session, stored.user_id)
    if user is None:
        raise InvalidResetToken()
    user.password_hash = await hash_password(new_password)
    await repository.use_all_password_reset_tokens(session, user.id, now)
    await revoke_sessions(session, user)
    # Whoever locked the account out (from the owner's address, say) loses
    # that hold: the owner just proved control of the mailbox.
    per_pair, _ = login_throttles()
    await per_pair.clear_account(login_account_key(user.email))
    logger.info("password reset for user %s", user.id)
