"""Errors of the users domain (codes and statuses in docs/api.md)."""

from __future__ import annotations

from app.core.errors import (
    Conflict,
)


class EmailTaken(Conflict):
    code = "email_taken"
    message = "An account with this email already exists"
