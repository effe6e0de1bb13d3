from __future__ import annotations

from typing import Any

from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema
from typing_extensions import Annotated

from app.core.schemas import DbId
from app.ledger.money import MAX_PAYMENT_MINOR


def _minor_units(value: Any) -> int:
    """A JSON integer (1000, or 1000.0) in range; not a bool, string or fraction."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("amount must be an integer number of minor units")
    if not 0 < value <= MAX_PAYMENT_MINOR:
        raise ValueError(f"amount must be between 1 and {MAX_PAYMENT_MINOR}")
    return value


MinorUnits = Annotated[
    int,
    BeforeValidator(_minor_units),
    WithJsonSchema(
        {
            "type": "integer",
            "exclusiveMinimum": 0,
            "maximum": MAX_PAYMENT_MINOR,
            "description": "Amount in minor units (cents): 1000 is 10.00",
        }
    ),
]


class PaymentCreate(BaseModel):
    amount: MinorUnits
    account_id: DbId


class PaymentOut(BaseModel):
    id: int
    status: str
    amount: int = Field(description="Amount in minor units, as requested")
    account_id: int


class WebhookAck(BaseModel):
    received: bool = True
