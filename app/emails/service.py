"""Emails users ask for: queued as jobs, sent by the worker."""

from __future__ import annotations

from typing import Any, Dict, Optional

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Forbidden
from app.core.security import Principal
from app.jobs.models import Job
from app.jobs.service import enqueue_job
from app.users import service as users_service

SEND_EMAIL = "emails.send"
DEFAULT_SUBJECT = "A message from keel"
DEFAULT_BODY = "Hello {name},\n\nThis is a message from keel.\n"


def _payload(user_id: int, subject: Optional[str], body: Optional[str]) -> Dict[str, Any]:
    given = {"subject": subject, "body": body}
    return {"user_id": user_id, **{key: value for key, value in given.items() if value is not None}}


async def queue_email(
    session: AsyncSession,
    *,
    actor: Principal,
    user_id: int,
    subject: Optional[str],
    body: Optional[str],
) -> Job:
    """Queue an email to a user; it is sent after this transaction commits.
    Raises Forbidden (not yourself and not a superuser), NotFound (no such user)."""
    if actor.id != user_id and not actor.is_superuser:
        raise Forbidden("You may only email yourself")
    user = await users_service.get_user(session, user_id)
    return await enqueue_job(
        session, kind=SEND_EMAIL, payload=_payload(user.id, subject, body), owner_id=actor.id
    )
