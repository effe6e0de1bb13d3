from __future__ import annotations

from typing import Optional

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer
from typing_extensions import Annotated

from app.auth.principal import Principal, authenticate_principal
from app.auth.service import authenticate_access_token
from app.core.db import DbSession
from app.core.errors import Forbidden, NotAuthenticated
from app.core.logging import user_id_var
from app.users.models import User

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/token", auto_error=False)


async def get_current_user(
    session: DbSession, token: Annotated[Optional[str], Depends(oauth2_scheme)]
) -> User:
    if not token:
        raise NotAuthenticated()
    user = await authenticate_access_token(session, token)
    user_id_var.set(user.id)
    return user


async def get_current_superuser(
    user: Annotated[User, Depends(get_current_user)],
) -> User:
    if not user.is_superuser:
        raise Forbidden("Superuser privileges required")
    return user


async def get_current_principal(
    token: Annotated[Optional[str], Depends(oauth2_scheme)],
) -> Principal:
    if not token:
        raise NotAuthenticated()
    principal = await authenticate_principal(token)
    user_id_var.set(principal.id)
    return principal


CurrentUser = Annotated[User, Depends(get_current_user)]
# Identity only, no request transaction: see app/auth/principal.py.
CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]
CurrentSuperuser = Annotated[User, Depends(get_current_superuser)]
