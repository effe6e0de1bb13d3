"""Errors of the auth domain (codes and statuses in docs/api.md)."""

from __future__ import annotations

from app.core.errors import (
    BadRequest,
)


class InvalidResetToken(BadRequest):
    code = "invalid_token"
    message = "Invalid or expired password reset token"
