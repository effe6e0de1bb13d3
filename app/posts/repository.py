"""All SQL of the posts domain."""

from __future__ import annotations

from typing import List, Optional

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

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


async def count_posts(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count(Post.id)))).scalar_one())


async def list_posts(session: AsyncSession, *, limit: int, offset: int) -> List[Post]:
    stmt = select(Post).order_by(Post.id.desc()).limit(limit).offset(offset)
    return list((await session.execute(stmt)).scalars().all())


async def delete_post(session: AsyncSession, post: Post) -> None:
    await session.delete(post)
    await session.flush()
