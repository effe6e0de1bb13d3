from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, status

from app.auth.dependencies import CurrentUser
from app.core.db import DbSession
from app.core.pagination import NoQuery
from app.core.routing import KeelRoute
from app.core.schemas import IdPath, error_responses
from app.emails import service
from app.emails.schemas import EmailQueued, SendEmailRequest

router = APIRouter(tags=["email"], route_class=KeelRoute)


@router.post(
    "/api/send-email/{user_id}",
    dependencies=[NoQuery],
    response_model=EmailQueued,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(401, 403, 404, 422),
    summary="Queue an email to a user (yourself, or anyone as a superuser)",
)
async def send_email(
    user_id: IdPath,
    session: DbSession,
    user: CurrentUser,
    body: Optional[SendEmailRequest] = None,
) -> EmailQueued:
    request = body or SendEmailRequest()
    job = await service.queue_email(
        session, actor=user, user_id=user_id, subject=request.subject, body=request.body
    )
    return EmailQueued(job_id=job.id)
