"""The console's overview page: readiness, job counts, a 24-hour chart of job
outcomes (inline SVG drawn here, so the page loads nothing from outside),
the serving model and this process's request counters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Tuple

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.models import DEAD, SUCCEEDED, Job
from app.ml.serving import model_server
from app.ops.metrics import HTTP_REQUESTS
from app.ops.readiness import run_checks

# This process's start (the module is imported while the app is built).
_STARTED = time.monotonic()
HOURS = 24
OUTCOMES = ((SUCCEEDED, "#2fb344"), (DEAD, "#d63939"))


@dataclass
class Overview:
    checks: Dict[str, str]
    job_counts: Dict[str, int]
    chart: Markup
    outcomes_24h: Dict[str, int]
    active_model: Optional[str]
    requests: int
    server_errors: int
    uptime_seconds: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.uptime_seconds if self.uptime_seconds > 0 else 0.0


async def job_counts(session: AsyncSession) -> Dict[str, int]:
    rows = await session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {status: count for status, count in rows.all()}


async def hourly_outcomes(session: AsyncSession, now: datetime) -> Dict[Tuple[int, str], int]:
    """Jobs that reached an outcome in each of the last 24 hours, keyed by
    (hours ago, outcome). A job's last status change is its `updated_at`."""
    since = now - timedelta(hours=HOURS)
    hour = func.floor(func.extract("epoch", now - Job.updated_at) / 3600).label("hours_ago")
    stmt = (
        select(hour, Job.status, func.count())
        .where(Job.updated_at > since, Job.status.in_([s for s, _ in OUTCOMES]))
        .group_by(hour, Job.status)
    )
    rows = await session.execute(stmt)
    return {(int(ago), status): count for ago, status, count in rows.all()}


def outcome_chart(counts: Dict[Tuple[int, str], int]) -> Markup:
    """Stacked bars, one per hour, oldest on the left. Presentation attributes
    only (no style attributes), so the page's CSP needs no 'unsafe-inline'."""
    bar, gap, height, top = 14, 4, 120, 10
    width = HOURS * (bar + gap)
    totals = [sum(counts.get((ago, s), 0) for s, _ in OUTCOMES) for ago in range(HOURS)]
    scale = max(max(totals), 1)
    parts: List[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="keel-chart" '
        f'width="{width}" height="{height + top + 20}" viewBox="0 0 {width} {height + top + 20}">',
        "<title>Jobs by outcome per hour, last 24 hours</title>",
        f'<line x1="0" y1="{height + top}" x2="{width}" y2="{height + top}" stroke="#999"/>',
    ]
    for column, ago in enumerate(range(HOURS - 1, -1, -1)):
        x = column * (bar + gap)
        y = height + top
        for status, colour in OUTCOMES:
            count = counts.get((ago, status), 0)
            if not count:
                continue
            h = max(1, round(count / scale * height))
            y -= h
            parts.append(
                f'<rect x="{x}" y="{y}" width="{bar}" height="{h}" fill="{colour}">'
                f"<title>{escape(status)}: {count} ({ago}-{ago + 1} h ago)</title></rect>"
            )
    parts.append(
        f'<text x="0" y="{height + top + 16}" font-size="11" fill="#666">-24 h</text>'
        f'<text x="{width}" y="{height + top + 16}" font-size="11" fill="#666" '
        f'text-anchor="end">now</text></svg>'
    )
    return Markup("".join(parts))


def request_counters() -> Tuple[int, int]:
    """(requests, 5xx responses) this process answered since it started."""
    total = errors = 0
    for metric in HTTP_REQUESTS.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            total += int(sample.value)
            if sample.labels.get("status", "").startswith("5"):
                errors += int(sample.value)
    return total, errors


async def build(session: AsyncSession) -> Overview:
    now = datetime.now(timezone.utc)
    counts = await job_counts(session)
    hourly = await hourly_outcomes(session, now)
    current = model_server.current()
    requests, server_errors = request_counters()
    return Overview(
        checks=await run_checks(),
        job_counts=counts,
        chart=outcome_chart(hourly),
        outcomes_24h={
            status: sum(c for (_, s), c in hourly.items() if s == status) for status, _ in OUTCOMES
        },
        active_model=current.version if current is not None else None,
        requests=requests,
        server_errors=server_errors,
        uptime_seconds=time.monotonic() - _STARTED,
    )
