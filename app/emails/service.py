"""Emails users ask for: queued as jobs, sent by the worker."""

from __future__ import annotations

from typing import Any, Dict, Optional

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Forbidden
from app.emails import repository
from app.jobs.models import Job
from app.jobs.outbox import DirectOutbox, OutboundMessage
from app.jobs.service import enqueue_job
from app.users import service as users_service
from app.users.models import User

SEND_EMAIL = "emails.send"
DEFAULT_SUBJECT = "A message from keel"
DEFAULT_BODY = "Hello {name},\n\nThis is a message from keel.\n"


def _payload(user_id: int, subject: Optional[str], body: Optional[str]) -> Dict[str, Any]:
    payload: Dict[str, Any] = {"user_id": user_id}
    if subject is not None:
        payload["subject"] = subject
    if body is not None:
        payload["body"] = body
    return payload


async def queue_email_if_allowed(
    outbox: DirectOutbox,
    *,
    actor_id: int,
    token_issued_at: float,
    user_id: int,
    subject: Optional[str],
    body: Optional[str],
) -> Optional[int]:
    """The common case of `queue_email` in one statement that is its own
    transaction: the caller (from a verified token issued at
    `token_issued_at`) is active and not revoked, and may email `user_id`,
    who exists. Returns the queued job's id (published once committed), or
    None when any check fails: `queue_email` then says which, or queues it
    if the state changed in between."""
    job_id = await repository.insert_email_job_if_allowed(
        outbox,
        kind=SEND_EMAIL,
        actor_id=actor_id,
        token_issued_at=token_issued_at,
        recipient_id=user_id,
        payload=_payload(user_id, subject, body),
    )
    if job_id is not None:
        await outbox.publish(OutboundMessage(job_id, SEND_EMAIL))
    return job_id


async def queue_email(
    session: AsyncSession,
    *,
    actor: User,
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
