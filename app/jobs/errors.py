"""Errors of the jobs domain (codes and statuses in docs/api.md)."""

from __future__ import annotations

from app.core.errors import (
    Conflict,
)


class JobNotDead(Conflict):
    code = "job_not_dead"
    message = "Only dead jobs can be retried"
