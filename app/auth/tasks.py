"""Worker side of auth: the password-reset email."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository
from app.auth.password_reset import SEND_PASSWORD_RESET_EMAIL, reset_token_from_nonce
from app.core.security import utcnow
from app.emails.tasks import load_recipient, send_job_email
from app.jobs.models import Job
from app.jobs.runner import job_task

RESET_SUBJECT = "Reset your keel password"
RESET_BODY = (
    "Hello {name},\n\n"
    "Someone (hopefully you) asked to reset the password of your keel account.\n"
    "Use this one-time token within {minutes} minutes:\n\n"
    "    {token}\n\n"
    "POST it with your new password to /api/auth/password-reset/confirm.\n"
    "If you did not ask for this, ignore this email: your password stays the same.\n"
)


def render_reset_body(*, name: str, token: str, expires_at: datetime, now: datetime) -> str:
    # To the nearest minute: the job runs a moment after the token was made,
    # and flooring turned a 30-minute token into "within 29 minutes".
    minutes = max(1, round((expires_at - now).total_seconds() / 60))
    return RESET_BODY.format(name=name, minutes=minutes, token=token)


@job_task(SEND_PASSWORD_RESET_EMAIL)
async def send_password_reset_email(session: AsyncSession, job: Job) -> None:
    user = await load_recipient(session, job)
    token = await repository.get_password_reset_token(session, int(job.payload["reset_token_id"]))
    now = utcnow()
    if token is None or token.used_at is not None or token.expires_at <= now:
        return  # superseded or expired: nothing useful to send
    body = render_reset_body(
        name=user.name,
        token=reset_token_from_nonce(token.nonce),
        expires_at=token.expires_at,
        now=now,
    )
    await send_job_email(job, to=user.email, subject=RESET_SUBJECT, body=body)
