"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Dict

from fastapi import APIRouter

from app.core.routing import KeelRoute

router = APIRouter(tags=["system"], route_class=KeelRoute)


@router.get("/health", response_model=Dict[str, str])
async def health() -> Dict[str, str]:
    """The process is alive and its event loop answers. Touches nothing else."""
    return {"status": "ok"}
