from __future__ import annotations

from typing import Optional

from fastapi import Header
from typing_extensions import Annotated

from app.idempotency.service import MAX_KEY_LENGTH

IdempotencyKeyHeader = Annotated[
    Optional[str],
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[\x21-\x7e]+$",
        description="Client-chosen key (printable ASCII, up to 255 characters): "
        "a replay of the same request returns the first response.",
    ),
]
