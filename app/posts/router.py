from __future__ import annotations

from typing import Any, Dict, List

from fastapi import APIRouter, Depends, Response, status
from starlette.types import Scope, Send
from typing_extensions import Annotated

from app.auth.dependencies import CurrentPrincipal, CurrentUser
from app.auth.principal import bearer_principal
from app.core.db import DbSession, Reads, resolve_reader
from app.core.fastpath import header, send_json, served_by
from app.core.pagination import Page, PageParams, page_params, plain_page
from app.core.responses import dump_rows, rows_json
from app.core.routing import KeelRoute
from app.core.schemas import IdPath, error_responses
from app.posts import service
from app.posts.schemas import PostCreate, PostOut, PostUpdate

router = APIRouter(prefix="/api/posts", tags=["posts"], route_class=KeelRoute)


@router.post(
    "",
    response_model=PostOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 422),
)
async def create_post(body: PostCreate, session: DbSession, user: CurrentUser) -> PostOut:
    post = await service.create_post(session, author=user, title=body.title, body=body.body)
    return PostOut.model_validate(post)


PostPage = Page[PostOut]

# Reads need the caller's identity (no user row) and one autocommit statement:
# a page is one SQL round trip. See app/auth/principal.py for the trade-off.


async def _list_posts_fast(scope: Scope, body: bytes, send: Send) -> bool:
    """GET /api/posts for a plain page request; see app/core/fastpath.py."""
    page = plain_page(scope["query_string"])
    if page is None or await bearer_principal(header(scope, b"authorization")) is None:
        return False
    limit, offset = page
    reader = await resolve_reader(scope["app"])
    posts, total = await service.list_posts(reader, limit=limit, offset=offset)
    await send_json(send, dump_rows(_page(posts, total, limit, offset)))
    return True


def _page(posts: List[Any], total: int, limit: int, offset: int) -> Dict[str, Any]:
    return {"items": posts, "total": total, "limit": limit, "offset": offset}


@router.get("", response_model=PostPage, responses=error_responses(401, 422))
@served_by(_list_posts_fast)
async def list_posts(
    reads: Reads,
    caller: CurrentPrincipal,
    page: Annotated[PageParams, Depends(page_params)],
) -> Response:
    posts, total = await service.list_posts(reads, limit=page.limit, offset=page.offset)
    return rows_json(_page(posts, total, page.limit, page.offset))


@router.get("/{post_id}", response_model=PostOut, responses=error_responses(401, 404, 422))
async def read_post(post_id: IdPath, reads: Reads, caller: CurrentPrincipal) -> Response:
    return rows_json(await service.read_post(reads, post_id))


@router.patch("/{post_id}", response_model=PostOut, responses=error_responses(401, 403, 404, 422))
async def update_post(
    post_id: IdPath, body: PostUpdate, session: DbSession, user: CurrentUser
) -> PostOut:
    post = await service.update_post(
        session, post_id=post_id, user=user, title=body.title, body=body.body
    )
    return PostOut.model_validate(post)


@router.delete(
    "/{post_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_post(post_id: IdPath, session: DbSession, user: CurrentUser) -> Response:
    await service.delete_post(session, post_id=post_id, user=user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
