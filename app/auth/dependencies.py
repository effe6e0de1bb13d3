"""The one auth dependency: `CurrentUser` (and `CurrentSuperuser` on top of it).

Both resolve the bearer token to a `Principal` through app/auth/principal.py
(verified JWT + the account's cached standing; see there for the cache and
its revocation bound). An endpoint that needs the user's row loads it.
"""

from __future__ import annotations

from typing import Optional

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer
from typing_extensions import Annotated

from app.auth.principal import authenticate_principal
from app.core.errors import Forbidden, NotAuthenticated
from app.core.logging import user_id_var
from app.core.security import Principal

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/token", auto_error=False)


async def get_current_user(
    token: Annotated[Optional[str], Depends(oauth2_scheme)],
) -> Principal:
    """The caller of a valid access token. Raises NotAuthenticated / InvalidToken (401)."""
    if not token:
        raise NotAuthenticated()
    principal = await authenticate_principal(token)
    user_id_var.set(principal.id)
    return principal


CurrentUser = Annotated[Principal, Depends(get_current_user)]


async def get_current_superuser(user: CurrentUser) -> Principal:
    if not user.is_superuser:
        raise Forbidden("Superuser privileges required")
    return user


CurrentSuperuser = Annotated[Principal, Depends(get_current_superuser)]
