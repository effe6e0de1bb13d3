"""Users: sign-up and profiles."""

from __future__ import annotations

from typing import List, Optional, Tuple

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.core.security import hash_password
from app.jobs.service import enqueue_job
from app.users import repository
from app.users.errors import EmailTaken
from app.users.models import User


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    name: str,
    is_superuser: bool = False,
) -> User:
    """Create an account; raises EmailTaken (emails are case-insensitive).
    Checks for the email first so a duplicate sign-up does not pay for a hash;
    the insert is ON CONFLICT DO NOTHING, so two racing sign-ups still end
    with exactly one account and one EmailTaken."""
    email = normalize_email(email)
    if await repository.get_user_by_email(session, email) is not None:
        raise EmailTaken()
    password_hash = await hash_password(password)
    user = await repository.insert_user(
        session, email=email, name=name, password_hash=password_hash, is_superuser=is_superuser
    )
    if user is None:
        raise EmailTaken()
    return user


async def get_user(session: AsyncSession, user_id: int) -> User:
    user = await repository.get_user(session, user_id)
    if user is None:
        raise NotFound("User not found")
    return user


async def find_user_by_email(session: AsyncSession, email: str) -> Optional[User]:
    return await repository.get_user_by_email(session, normalize_email(email))


async def list_profiles(
    session: AsyncSession, *, limit: int, offset: int
) -> Tuple[List[User], int]:
    """A page of users with their posts eager-loaded: 2 statements for any page size."""
    return await repository.list_users_with_posts(session, limit=limit, offset=offset)


async def find_active_user(session: AsyncSession, user_id: int) -> Optional[User]:
    user = await repository.get_user(session, user_id)
    return user if user is not None and user.is_active else None


SEND_WELCOME_EMAIL = "users.send_welcome_email"


async def sign_up(session: AsyncSession, *, email: str, password: str, name: str) -> User:
    """Public sign-up: create the account and queue the welcome email in the
    same transaction (sent only if the account is committed). Raises EmailTaken."""
    user = await create_user(session, email=email, password=password, name=name)
    await enqueue_job(
        session, kind=SEND_WELCOME_EMAIL, payload={"user_id": user.id}, owner_id=user.id
    )
    return user
