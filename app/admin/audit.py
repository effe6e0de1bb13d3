"""The one way an audit record is written, by the console and the API alike."""

from __future__ import annotations

from typing import Optional, Union

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from app.admin.models import AuditRecord
from app.auth.principal import Principal
from app.users.models import User

CONSOLE = "console"
API = "api"


def request_address(request: Request) -> Optional[str]:
    """The client address the server saw (after uvicorn's proxy-header handling)."""
    return request.client.host if request.client else None


async def record(
    session: AsyncSession,
    actor: Union[User, Principal],
    action: str,
    object_type: str,
    object_id: object,
    *,
    address: Optional[str],
    channel: str,
    detail: Optional[str] = None,
) -> AuditRecord:
    """Add an audit record to the caller's transaction: it is kept exactly
    when the action it describes is committed."""
    # An API caller is a Principal (id and role, from the auth cache): its
    # email is read here, on superuser actions only.
    user = actor if isinstance(actor, User) else await session.get(User, actor.id)
    entry = AuditRecord(
        actor_id=actor.id,
        actor_email=user.email if user is not None else "",
        channel=channel,
        action=action,
        object_type=object_type,
        object_id=str(object_id)[:128],
        address=(address or None) and address[:64],
        detail=detail[:500] if detail else None,
    )
    session.add(entry)
    await session.flush()
    return entry
