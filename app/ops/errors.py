"""Errors of the ops domain (codes and statuses in docs/api.md)."""

from __future__ import annotations

from app.core.errors import (
    ServiceUnavailable,
)


class NotReady(ServiceUnavailable):
    code = "not_ready"
    message = "Not ready"
