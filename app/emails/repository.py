"""All SQL of the emails domain."""

from __future__ import annotations

import json
from typing import Any, Dict, NamedTuple, Optional

from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.models import QUEUED
from app.jobs.outbox import DirectOutbox

# The whole of "queue an email" in one statement: the caller's account is
# active and the token not revoked (as authenticate_access_token checks),
# the caller is the recipient or a superuser, the recipient exists; then the
# job row. No row back means one of the checks failed.
_QUEUE_IF_ALLOWED_SQL = f"""
WITH actor AS (
    SELECT id, is_superuser FROM users
    WHERE id = $1 AND is_active
      AND (tokens_valid_after IS NULL OR tokens_valid_after <= to_timestamp($2))
)
INSERT INTO jobs (kind, payload, owner_id, status, attempts, deliveries)
SELECT $4, $5, actor.id, '{QUEUED}', 0, 0
FROM actor JOIN users AS recipient ON recipient.id = $3
WHERE recipient.id = actor.id OR actor.is_superuser
RETURNING id
"""


async def insert_email_job_if_allowed(
    outbox: DirectOutbox,
    *,
    kind: str,
    actor_id: int,
    token_issued_at: float,
    recipient_id: int,
    payload: Dict[str, Any],
) -> Optional[int]:
    """The new job's id, or None when the caller may not send it."""
    row = await outbox.fetchrow(
        _QUEUE_IF_ALLOWED_SQL,
        actor_id,
        token_issued_at,
        recipient_id,
        kind,
        json.dumps(payload),
    )
    return None if row is None else int(row["id"])


class Recipient(NamedTuple):
    id: int
    email: str
    name: str


_ACTIVE_RECIPIENT_SQL = "SELECT id, email, name FROM users WHERE id = $1 AND is_active"


async def get_active_recipient(session: AsyncSession, user_id: int) -> Optional[Recipient]:
    """An active user's address and name, in the session's transaction. SQL
    as the driver takes it: a worker does this once per email, and the ORM's
    load cost several times the round trip."""
    connection = await session.connection()
    row = (await connection.exec_driver_sql(_ACTIVE_RECIPIENT_SQL, (user_id,))).first()
    return None if row is None else Recipient(row.id, row.email, row.name)
