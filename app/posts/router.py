from __future__ import annotations

from typing import Any, Dict, List

from fastapi import APIRouter, Response, status

from app.auth.dependencies import CurrentUser
from app.core.db import DbSession, Reads
from app.core.pagination import NoQuery, Page, Pagination
from app.core.responses import ORJSONUTCResponse
from app.core.routing import KeelRoute
from app.core.schemas import IdPath, error_responses
from app.posts import service
from app.posts.schemas import PostCreate, PostOut, PostUpdate

router = APIRouter(prefix="/api/posts", tags=["posts"], route_class=KeelRoute)


@router.post(
    "",
    dependencies=[NoQuery],
    response_model=PostOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 422),
)
async def create_post(body: PostCreate, session: DbSession, user: CurrentUser) -> PostOut:
    post = await service.create_post(session, author=user, title=body.title, body=body.body)
    return PostOut.model_validate(post)


PostPage = Page[PostOut]

# Reads need the caller's identity (no user row, usually no round trip, see
# app/auth/principal.py) and one autocommit statement: a page is one round trip.


def _page(posts: List[Any], total: int, limit: int, offset: int) -> Dict[str, Any]:
    return {"items": posts, "total": total, "limit": limit, "offset": offset}


@router.get("", response_model=PostPage, responses=error_responses(401, 422))
async def list_posts(
    reads: Reads,
    caller: CurrentUser,
    page: Pagination,
) -> Response:
    posts, total = await service.list_posts(reads, limit=page.limit, offset=page.offset)
    return ORJSONUTCResponse(_page(posts, total, page.limit, page.offset))


@router.get(
    "/{post_id}",
    dependencies=[NoQuery],
    response_model=PostOut,
    responses=error_responses(401, 404, 422),
)
async def read_post(post_id: IdPath, reads: Reads, caller: CurrentUser) -> Response:
    return ORJSONUTCResponse(await service.read_post(reads, post_id))


@router.patch(
    "/{post_id}",
    dependencies=[NoQuery],
    response_model=PostOut,
    responses=error_responses(401, 403, 404, 422),
)
async def update_post(
    post_id: IdPath, body: PostUpdate, session: DbSession, user: CurrentUser
) -> PostOut:
    post = await service.update_post(
        session, post_id=post_id, user=user, title=body.title, body=body.body
    )
    return PostOut.model_validate(post)


@router.delete(
    "/{post_id}",
    dependencies=[NoQuery],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_post(post_id: IdPath, session: DbSession, user: CurrentUser) -> Response:
    await service.delete_post(session, post_id=post_id, user=user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
