"""Worker side of users: the welcome email."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.emails.tasks import load_recipient, send_job_email
from app.jobs.models import Job
from app.jobs.runner import job_task
from app.users.service import SEND_WELCOME_EMAIL

WELCOME_SUBJECT = "Welcome to keel"
WELCOME_BODY = (
    "Hello {name},\n\nYour keel account ({email}) is ready. Sign in any time.\n\n-- keel\n"
)


@job_task(SEND_WELCOME_EMAIL)
async def send_welcome_email(session: AsyncSession, job: Job) -> None:
    user = await load_recipient(session, job)
    body = WELCOME_BODY.format(name=user.name, email=user.email)
    await send_job_email(job, to=user.email, subject=WELCOME_SUBJECT, body=body)
