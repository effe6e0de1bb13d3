"""Liveness, readiness and metrics."""

from __future__ import annotations

import hmac
from typing import Dict

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from app.core.config import Settings
from app.core.errors import InvalidToken, NotAuthenticated, NotFound
from app.core.pagination import NoQuery
from app.core.routing import KeelRoute
from app.core.schemas import error_responses
from app.ops.errors import NotReady
from app.ops.metrics import render_metrics
from app.ops.readiness import run_checks

router = APIRouter(tags=["ops"], route_class=KeelRoute)


class Readiness(BaseModel):
    status: str
    checks: Dict[str, str]


@router.get("/health", dependencies=[NoQuery], response_model=Dict[str, str])
async def health() -> Dict[str, str]:
    """The process is alive and its event loop answers. Touches nothing else."""
    return {"status": "ok"}


@router.get(
    "/ready", dependencies=[NoQuery], response_model=Readiness, responses=error_responses(503)
)
async def ready() -> Readiness:
    """200 when the database, the broker and the model are usable; 503 naming
    what is not."""
    checks = await run_checks()
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        raise NotReady(
            f"not ready: {', '.join(failed)}",
            detail={"message": f"not ready: {', '.join(failed)}", "checks": checks},
            retry_after=5,
        )
    return Readiness(status="ok", checks=checks)


def require_metrics_token(request: Request) -> None:
    """With METRICS_TOKEN set, /metrics needs `Authorization: Bearer <token>`
    (compared in constant time). Without it, /metrics is open outside
    production and not served in production: request counts by route and
    pool gauges are not for anyone who asks."""
    settings: Settings = request.app.state.settings
    expected = settings.metrics_token
    if not expected:
        if settings.is_production:
            raise NotFound()
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise NotAuthenticated()
    if not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        raise InvalidToken()


@router.get(
    "/metrics",
    response_class=Response,
    include_in_schema=True,
    dependencies=[NoQuery, Depends(require_metrics_token)],
    responses=error_responses(401, 404),
)
async def metrics() -> Response:
    """Prometheus text exposition."""
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
