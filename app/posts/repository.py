"""All SQL of the posts domain."""

from __future__ import annotations

from typing import List, Optional, Tuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import fetch_page
from app.posts.models import Post


async def add_post(session: AsyncSession, *, author_id: int, title: str, body: str) -> Post:
    post = Post(author_id=author_id, title=title, body=body)
    session.add(post)
    await session.flush()
    await session.refresh(post)
    return post


async def get_post(
    session: AsyncSession, post_id: int, *, for_update: bool = False
) -> Optional[Post]:
    stmt = select(Post).where(Post.id == post_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_posts(session: AsyncSession, *, limit: int, offset: int) -> Tuple[List[Post], int]:
    """Newest first (ids are monotonic, so id order is creation order), with the total."""
    stmt = select(Post).order_by(Post.id.desc())
    return await fetch_page(session, stmt, limit=limit, offset=offset)


async def delete_post(session: AsyncSession, post: Post) -> None:
    await session.delete(post)
    await session.flush()
