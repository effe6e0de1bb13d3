from __future__ import annotations

from fastapi import APIRouter, Request

from app.auth.dependencies import CurrentUser
from app.core.pagination import NoQuery
from app.core.routing import KeelRoute
from app.core.schemas import error_responses
from app.ingestion import service
from app.ingestion.schemas import CsvUploadOut

router = APIRouter(prefix="/api", tags=["ingestion"], route_class=KeelRoute)

_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "/upload-csv",
    dependencies=[NoQuery],
    response_model=CsvUploadOut,
    responses=error_responses(400, 401, 408, 413, 422),
    openapi_extra=_MULTIPART_BODY,
    summary="Summarize a CSV file (multipart field `file`)",
)
async def upload_csv(request: Request, user: CurrentUser) -> CsvUploadOut:
    # The body is read here, not by FastAPI (which would spool the whole file first).
    settings = request.app.state.settings
    result = await service.summarize_csv_upload(
        request.receive,
        request.headers.get("content-type"),
        max_file_bytes=settings.max_upload_bytes,
        read_timeout=settings.upload_read_timeout,
    )
    return CsvUploadOut.from_summary(result)
