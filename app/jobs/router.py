from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Query, Request, status
from pydantic import Field
from typing_extensions import Annotated

from app.admin import audit
from app.auth.dependencies import CurrentSuperuser, CurrentUser
from app.core.db import DbSession
from app.core.pagination import NoQuery, Page, PageParams
from app.core.routing import KeelRoute
from app.core.schemas import IdPath, error_responses
from app.jobs import service
from app.jobs.schemas import JobOut

router = APIRouter(prefix="/api/jobs", tags=["jobs"], route_class=KeelRoute)


class JobListParams(PageParams):
    status: Optional[str] = Field(None, pattern="^(queued|running|retrying|succeeded|dead)$")


@router.get(
    "",
    response_model=Page[JobOut],
    responses=error_responses(401, 403, 422),
    summary="List jobs (superuser); status=dead lists the dead letters",
)
async def list_jobs(
    session: DbSession,
    user: CurrentSuperuser,
    page: Annotated[JobListParams, Query()],
) -> Page[JobOut]:
    jobs, total = await service.list_jobs(
        session, status=page.status, limit=page.limit, offset=page.offset
    )
    return Page[JobOut](
        items=[JobOut.model_validate(j) for j in jobs],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/{job_id}",
    dependencies=[NoQuery],
    response_model=JobOut,
    responses=error_responses(401, 404, 422),
)
async def read_job(job_id: IdPath, session: DbSession, user: CurrentUser) -> JobOut:
    return JobOut.model_validate(await service.get_job(session, job_id=job_id, viewer=user))


@router.post(
    "/{job_id}/retry",
    dependencies=[NoQuery],
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(401, 403, 404, 409, 422),
    summary="Queue a dead job again (superuser)",
)
async def retry_job(
    job_id: IdPath, request: Request, session: DbSession, user: CurrentSuperuser
) -> JobOut:
    job = await service.retry_job(session, job_id=job_id)
    address = audit.request_address(request)
    await audit.record(
        session, user, "job.retry", "job", job.id, address=address, channel=audit.API
    )
    return JobOut.model_validate(job)
