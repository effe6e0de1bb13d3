"""All SQL of the posts domain."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import PreparedRead, Reader
from app.core.pagination import PageQuery, fetch_row_page
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


# Reads fetch plain rows of table columns through Reader.fetch, not ORM
# objects: building 50 of those per page costs more than the query itself.
_posts = Post.__table__
POST_COLUMNS = (
    _posts.c.id,
    _posts.c.title,
    _posts.c.body,
    _posts.c.author_id,
    _posts.c.created_at,
    _posts.c.updated_at,
)


async def list_posts(reader: Reader, *, limit: int, offset: int) -> Tuple[List[Any], int]:
    """Rows of a page, newest first (ids are monotonic, so id order is creation
    order), with the total."""
    return await fetch_row_page(reader, _NEWEST_FIRST, limit=limit, offset=offset)


_NEWEST_FIRST = PageQuery(lambda: select(*POST_COLUMNS).order_by(_posts.c.id.desc()))
_ONE_POST = PreparedRead(select(*POST_COLUMNS).where(_posts.c.id == bindparam("post_id")))


async def read_post(reader: Reader, post_id: int) -> Optional[Dict[str, Any]]:
    """One post's columns as a dict, or None."""
    rows = await reader.fetch(_ONE_POST, {"post_id": post_id})
    return dict(rows[0]) if rows else None


async def delete_post(session: AsyncSession, post: Post) -> None:
    await session.delete(post)
    await session.flush()
