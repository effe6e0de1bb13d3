"""Prometheus metrics of background jobs."""

from __future__ import annotations

from prometheus_client import Counter

JOB_OUTCOMES = Counter(
    "keel_job_outcomes_total", "Job runs by kind and outcome", ["kind", "outcome"]
)
JOBS_REPUBLISHED = Counter("keel_jobs_republished_total", "Jobs the outbox sweep published again")
