from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status
from typing_extensions import Annotated

from app.auth import password_reset, service
from app.auth.dependencies import CurrentUser
from app.auth.schemas import (
    PasswordLoginForm,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    ResetAccepted,
    TokenPair,
)
from app.core.db import DbSession
from app.core.pagination import NoQuery
from app.core.routing import KeelRoute
from app.core.schemas import error_responses

router = APIRouter(tags=["auth"], route_class=KeelRoute)


@router.post(
    "/token",
    dependencies=[NoQuery],
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


@router.post(
    "/token/refresh",
    dependencies=[NoQuery],
    response_model=TokenPair,
    responses=error_responses(401, 422),
)
async def refresh_token(body: RefreshRequest, session: DbSession) -> TokenPair:
    return await service.refresh(session, refresh_token=body.refresh_token)


@router.post(
    "/api/auth/logout",
    dependencies=[NoQuery],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 422),
)
async def logout(body: RefreshRequest, session: DbSession, user: CurrentUser) -> Response:
    await service.logout(session, user=user, refresh_token=body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/api/auth/password-reset",
    dependencies=[NoQuery],
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ResetAccepted,
    responses=error_responses(422, 429),
    summary="Email a one-time reset token if the account exists (always 202)",
)
async def request_password_reset(
    body: PasswordResetRequest, request: Request, session: DbSession
) -> ResetAccepted:
    client_host = request.client.host if request.client else None
    await password_reset.request_password_reset(session, email=body.email, client_host=client_host)
    return ResetAccepted()


@router.post(
    "/api/auth/password-reset/confirm",
    dependencies=[NoQuery],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(400, 422),
    summary="Set a new password with a reset token; every session is revoked",
)
async def confirm_password_reset(body: PasswordResetConfirm, session: DbSession) -> Response:
    await password_reset.confirm_password_reset(
        session, token=body.token, new_password=body.new_password
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
