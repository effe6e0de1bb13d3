"""Errors of idempotency keys (codes in docs/api.md)."""

from __future__ import annotations

from typing import Any, Dict

from app.core.errors import AppError, Conflict


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was already used with a different request"


class ReplayedError(AppError):
    """The stored error response of the first request with this key."""

    def __init__(self, status_code: int, body: Dict[str, Any]) -> None:
        super().__init__(str(body.get("detail", "")), detail=body.get("detail"))
        self.status_code = status_code
        self.code = str(body.get("code", "error"))
