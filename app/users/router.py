from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.auth.dependencies import CurrentUser
from app.core.db import DbSession
from app.core.pagination import NoQuery, Page, Pagination
from app.core.responses import ORJSONUTCResponse
from app.core.routing import KeelRoute
from app.core.schemas import error_responses
from app.users import service
from app.users.schemas import PublicProfile, UserCreate, UserOut

router = APIRouter(prefix="/api/users", tags=["users"], route_class=KeelRoute)


@router.post(
    "",
    dependencies=[NoQuery],
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, 422),
    summary="Sign up",
)
async def sign_up(body: UserCreate, session: DbSession) -> UserOut:
    user = await service.sign_up(session, email=body.email, password=body.password, name=body.name)
    return UserOut.model_validate(user)


@router.get("/me", dependencies=[NoQuery], response_model=UserOut, responses=error_responses(401))
async def read_me(user: CurrentUser) -> Response:
    # The principal carries the profile (app/auth/principal.py): no read of its own.
    return ORJSONUTCResponse({"id": user.id, "email": user.email, "name": user.name})


@router.get("", response_model=Page[PublicProfile], responses=error_responses(401, 422))
async def list_users(
    session: DbSession,
    user: CurrentUser,
    page: Pagination,
) -> Page[PublicProfile]:
    users, total = await service.list_profiles(session, limit=page.limit, offset=page.offset)
    return Page[PublicProfile](
        items=[PublicProfile.model_validate(u) for u in users],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )
