"""Posts: anyone signed in reads; only the author changes or deletes."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import Reader
from app.core.security import Principal
from app.posts import repository
from app.posts.errors import NotAuthor, PostNotFound
from app.posts.models import Post


async def create_post(session: AsyncSession, *, author: Principal, title: str, body: str) -> Post:
    return await repository.add_post(session, author_id=author.id, title=title, body=body)


async def read_post(reader: Reader, post_id: int) -> Any:
    """A post's fields (a row mapping). Raises PostNotFound."""
    post = await repository.read_post(reader, post_id)
    if post is None:
        raise PostNotFound()
    return post


async def list_posts(reader: Reader, *, limit: int, offset: int) -> Tuple[List[Any], int]:
    """A page of posts (row mappings with PostOut's fields), newest first, and the total."""
    return await repository.list_posts(reader, limit=limit, offset=offset)


async def _own_post_for_update(session: AsyncSession, post_id: int, user: Principal) -> Post:
    post = await repository.get_post(session, post_id, for_update=True)
    if post is None:
        raise PostNotFound()
    if post.author_id != user.id:
        raise NotAuthor()
    return post


async def update_post(
    session: AsyncSession,
    *,
    post_id: int,
    user: Principal,
    title: Optional[str] = None,
    body: Optional[str] = None,
) -> Post:
    """Partial update by the author. Raises PostNotFound or NotAuthor."""
    post = await _own_post_for_update(session, post_id, user)
    if title is not None:
        post.title = title
    if body is not None:
        post.body = body
    await session.flush()
    await session.refresh(post)
    return post


async def delete_post(session: AsyncSession, *, post_id: int, user: Principal) -> None:
    """Delete by the author. Raises PostNotFound or NotAuthor."""
    post = await _own_post_for_update(session, post_id, user)
    await repository.delete_post(session, post)
