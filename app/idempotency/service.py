"""Idempotency keys: the first response to a keyed request, replayed after.

A key belongs to a user; its row stores a hash of the request and, once
known, the response. It is claimed with INSERT ... ON CONFLICT DO NOTHING in
the transaction doing the work, so concurrent duplicates serialise on the
unique index and exactly one has an effect.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

from fastapi.encoders import jsonable_encoder
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError, Conflict, error_body
from app.idempotency import repository
from app.idempotency.errors import IdempotencyKeyReused, ReplayedError

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Claim:
    key_id: int
    is_new: bool
    response_status: Optional[int] = None
    response_body: Any = None

    @property
    def has_response(self) -> bool:
        return self.response_status is not None


def request_fingerprint(method: str, path: str, payload: Dict[str, Any]) -> str:
    """Stable hash of a request; payload values must already be normalised
    (e.g. amounts as 2-place strings) so equivalent bodies hash equally."""
    canonical = json.dumps(
        {"method": method, "path": path, "body": payload}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def claim_key(session: AsyncSession, *, user_id: int, key: str, request_hash: str) -> Claim:
    """Claim `key` for this request or find its earlier use. Raises
    IdempotencyKeyReused when the key was used with another request."""
    key_id = await repository.insert_idempotency_key(
        session, user_id=user_id, key=key, request_hash=request_hash
    )
    if key_id is not None:
        return Claim(key_id=key_id, is_new=True)
    existing = await repository.get_idempotency_key(session, user_id=user_id, key=key)
    if existing is None:
        # Its owner was deleted between the two statements; nothing to replay.
        raise Conflict("Idempotency-Key is being reused concurrently, retry")
    if existing.request_hash != request_hash:
        raise IdempotencyKeyReused()
    return Claim(
        key_id=existing.id,
        is_new=False,
        response_status=existing.response_status,
        response_body=existing.response_body,
    )


def replay_error(claim: Claim) -> None:
    """Raise the stored error response, if the stored response is an error."""
    if claim.response_status is not None and claim.response_status >= 400:
        raise ReplayedError(claim.response_status, dict(claim.response_body or {}))


async def record_response(session: AsyncSession, claim: Claim, *, status: int, body: Any) -> None:
    await repository.store_idempotent_response(
        session, key_id=claim.key_id, status=status, body=body
    )


def error_response_body(error: AppError) -> Dict[str, Any]:
    return error_body(jsonable_encoder(error.detail), error.code)
