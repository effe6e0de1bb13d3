"""Worker side of emails: render and send over SMTP."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import get_settings
from app.emails.repository import Recipient, get_active_recipient
from app.emails.service import DEFAULT_BODY, DEFAULT_SUBJECT, SEND_EMAIL
from app.integrations.mailer import OutgoingEmail, get_mailer, mail_domain
from app.jobs.models import Job
from app.jobs.runner import PermanentJobError, job_task


def message_id_for_job(job: Job) -> str:
    """Stable per job: a re-sent message is recognisably the same message."""
    stamp = job.created_at.strftime("%Y%m%d%H%M%S%f")
    return f"<job-{job.id}.{stamp}@{mail_domain(get_settings())}>"


async def load_recipient(session: AsyncSession, job: Job) -> Recipient:
    """The job's recipient (an active user), in the job's transaction.
    Raises PermanentJobError when there is none."""
    user = await get_active_recipient(session, int(job.payload["user_id"]))
    if user is None:
        raise PermanentJobError(f"user {job.payload['user_id']} not found")
    return user


async def send_job_email(job: Job, *, to: str, subject: str, body: str) -> None:
    await get_mailer().send(
        OutgoingEmail(to=to, subject=subject, body=body, message_id=message_id_for_job(job))
    )


@job_task(SEND_EMAIL)
async def send_email(session: AsyncSession, job: Job) -> None:
    user = await load_recipient(session, job)
    subject = job.payload.get("subject") or DEFAULT_SUBJECT
    body = job.payload.get("body") or DEFAULT_BODY.format(name=user.name)
    await send_job_email(job, to=user.email, subject=subject, body=body)
