from __future__ import annotations

from typing import Dict

from fastapi import APIRouter, Request

from app.auth.dependencies import CurrentUser
from app.core.config import Settings
from app.core.pagination import NoQuery
from app.core.routing import KeelRoute
from app.core.schemas import error_responses
from app.ingestion import service
from app.ingestion.schemas import CsvUploadOut

router = APIRouter(prefix="/api", tags=["ingestion"], route_class=KeelRoute)

UPLOAD_PATH = "/api/upload-csv"
# Over the limit, the upload answers 413 with this code (docs/api.md).
UPLOAD_LIMIT_CODES: Dict[str, str] = {UPLOAD_PATH: "file_too_large"}


def upload_body_limits(settings: Settings) -> Dict[str, int]:
    """The upload route's own body limit (app.main gives it to the body size
    middleware): MAX_UPLOAD_BYTES of file plus room for the multipart framing.
    The service counts the file's own bytes against MAX_UPLOAD_BYTES."""
    return {UPLOAD_PATH: settings.max_upload_bytes + 64 * 1024}


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
