"""All SQL of the users domain."""

from __future__ import annotations

from typing import List, Optional, Tuple

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from app.core.pagination import PageQuery, fetch_page
from app.users.models import User


async def get_user(session: AsyncSession, user_id: int) -> Optional[User]:
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> Optional[User]:
    result = await session.execute(select(User).where(User.email == email.lower()))
    return result.scalar_one_or_none()


async def insert_user(
    session: AsyncSession, *, email: str, name: str, password_hash: str, is_superuser: bool
) -> Optional[User]:
    """Insert, or return None when the email is taken (race-free: ON CONFLICT)."""
    stmt = (
        insert(User)
        .values(email=email, name=name, password_hash=password_hash, is_superuser=is_superuser)
        .on_conflict_do_nothing(index_elements=[User.email])
        .returning(User)
    )
    result = await session.execute(stmt)
    return result.scalar_one_or_none()


async def list_users_with_posts(
    session: AsyncSession, *, limit: int, offset: int
) -> Tuple[List[User], int]:
    """One statement for the page and total, one for all their posts (selectin)."""
    return await fetch_page(session, _USERS_WITH_POSTS, limit=limit, offset=offset)


_USERS_WITH_POSTS = PageQuery(
    lambda: select(User).options(selectinload(User.posts)).order_by(User.id)
)
