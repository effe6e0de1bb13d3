from __future__ import annotations

from typing import Any

from pydantic import BaseModel, BeforeValidator, Field
from typing_extensions import Annotated

from app.core.schemas import DbId
from app.ledger.money import MAX_PAYMENT_MINOR


def _integer_only(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("amount must be an integer number of minor units")
    return value


MinorUnits = Annotated[int, BeforeValidator(_integer_only), Field(gt=0, le=MAX_PAYMENT_MINOR)]


class PaymentCreate(BaseModel):
    amount: MinorUnits = Field(description="Amount in minor units (cents): 1000 is 10.00")
    account_id: DbId


class PaymentOut(BaseModel):
    id: int
    status: str
    amount: int = Field(description="Amount in minor units, as requested")
    account_id: int


class WebhookAck(BaseModel):
    received: bool = True
