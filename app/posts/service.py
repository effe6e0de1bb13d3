"""Posts: anyone signed in reads; only the author changes or deletes."""

from __future__ import annotations

from typing import List, Optional, Tuple

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Forbidden, NotFound
from app.posts import repository
from app.posts.models import Post
from app.users.models import User


class NotAuthor(Forbidden):
    code = "not_author"
    message = "Only the author may change this post"


class PostNotFound(NotFound):
    message = "Post not found"


async def create_post(session: AsyncSession, *, author: User, title: str, body: str) -> Post:
    return await repository.add_post(session, author_id=author.id, title=title, body=body)


async def get_post(session: AsyncSession, post_id: int) -> Post:
    post = await repository.get_post(session, post_id)
    if post is None:
        raise PostNotFound()
    return post


async def list_posts(session: AsyncSession, *, limit: int, offset: int) -> Tuple[List[Post], int]:
    """A page of posts, newest first, and the total count."""
    return await repository.list_posts(session, limit=limit, offset=offset)


async def _own_post_for_update(session: AsyncSession, post_id: int, user: User) -> Post:
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
    user: User,
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


async def delete_post(session: AsyncSession, *, post_id: int, user: User) -> None:
    """Delete by the author. Raises PostNotFound or NotAuthor."""
    post = await _own_post_for_update(session, post_id, user)
    await repository.delete_post(session, post)
