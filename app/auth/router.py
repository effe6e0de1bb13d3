from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status
from typing_extensions import Annotated

from app.auth import service
from app.auth.dependencies import CurrentUser
from app.auth.schemas import PasswordLoginForm, RefreshRequest, TokenPair
from app.core.db import DbSession
from app.core.routing import KeelRoute
from app.core.schemas import error_responses

router = APIRouter(tags=["auth"], route_class=KeelRoute)


@router.post(
    "/token",
    response_model=TokenPair,
    responses=error_responses(401, 422, 429),
    summary="Log in with the OAuth2 password flow (username = email)",
)
async def login(
    request: Request,
    session: DbSession,
    form: Annotated[PasswordLoginForm, Depends()],
) -> TokenPair:
    client_host = request.client.host if request.client else None
    return await service.login(
        session, email=form.username, password=form.password, client_host=client_host
    )


@router.post("/token/refresh", response_model=TokenPair, responses=error_responses(401, 422))
async def refresh_token(body: RefreshRequest, session: DbSession) -> TokenPair:
    return await service.refresh(session, refresh_token=body.refresh_token)


@router.post(
    "/api/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 422),
)
async def logout(body: RefreshRequest, session: DbSession, user: CurrentUser) -> Response:
    await service.logout(session, user=user, refresh_token=body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
