from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status
from typing_extensions import Annotated

from app.auth.dependencies import CurrentUser
from app.core.db import DbSession
from app.core.pagination import Page, PageParams, page_params
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


@router.get("", response_model=Page[PostOut], responses=error_responses(401, 422))
async def list_posts(
    session: DbSession, user: CurrentUser, page: Annotated[PageParams, Depends(page_params)]
) -> Page[PostOut]:
    posts, total = await service.list_posts(session, limit=page.limit, offset=page.offset)
    return Page[PostOut](
        items=[PostOut.model_validate(p) for p in posts],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{post_id}", response_model=PostOut, responses=error_responses(401, 404, 422))
async def read_post(post_id: IdPath, session: DbSession, user: CurrentUser) -> PostOut:
    return PostOut.model_validate(await service.get_post(session, post_id))


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
