from __future__ import annotations

from typing import Optional, Tuple

from fastapi import APIRouter, Depends, status
from typing_extensions import Annotated

from app.auth.dependencies import oauth2_scheme
from app.auth.principal import verify_access_token
from app.auth.service import authenticate_access_token
from app.core.errors import NotAuthenticated
from app.core.logging import user_id_var
from app.core.pagination import NoQuery
from app.core.routing import KeelRoute
from app.core.schemas import IdPath, error_responses
from app.emails import service
from app.emails.schemas import EmailQueued, SendEmailRequest
from app.jobs.outbox import DirectOutbox, get_direct_outbox

router = APIRouter(tags=["email"], route_class=KeelRoute)


async def verified_token(
    token: Annotated[Optional[str], Depends(oauth2_scheme)],
) -> Tuple[str, int, float]:
    """(token, user id, issued at) of a validly signed, unexpired access
    token; the account's standing is checked by the statement that uses it.
    Raises NotAuthenticated / InvalidToken (401)."""
    if not token:
        raise NotAuthenticated()
    user_id, issued_at = verify_access_token(token)
    user_id_var.set(user_id)
    return token, user_id, issued_at


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
    caller: Annotated[Tuple[str, int, float], Depends(verified_token)],
    outbox: Annotated[DirectOutbox, Depends(get_direct_outbox)],
    body: Optional[SendEmailRequest] = None,
) -> EmailQueued:
    request = body or SendEmailRequest()
    token, actor_id, issued_at = caller
    job_id = await service.queue_email_if_allowed(
        outbox,
        actor_id=actor_id,
        token_issued_at=issued_at,
        user_id=user_id,
        subject=request.subject,
        body=request.body,
    )
    if job_id is None:
        # Refused (or the state changed since): the full checks say why.
        async with outbox.transaction() as session:
            actor = await authenticate_access_token(session, token)
            job = await service.queue_email(
                session, actor=actor, user_id=user_id, subject=request.subject, body=request.body
            )
            job_id = job.id
    return EmailQueued(job_id=job_id)
