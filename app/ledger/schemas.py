from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema, model_validator
from typing_extensions import Annotated

from app.core.schemas import DbId
from app.ledger.currencies import ISO_4217
from app.ledger.money import MoneyOut, PositiveAmount


def _iso_4217(value: Any) -> Any:
    if not isinstance(value, str) or value not in ISO_4217:
        raise ValueError("currency must be an ISO 4217 code such as 'USD'")
    return value


CurrencyCode = Annotated[
    str,
    BeforeValidator(_iso_4217),
    WithJsonSchema({"type": "string", "enum": sorted(ISO_4217), "examples": ["USD"]}),
]


class AccountCreate(BaseModel):
    currency: CurrencyCode


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    owner_id: int
    currency: str
    balance: MoneyOut
    created_at: datetime


class TransferCreate(BaseModel):
    from_account_id: DbId
    to_account_id: DbId
    amount: PositiveAmount

    @model_validator(mode="after")
    def _distinct_accounts(self) -> TransferCreate:
        if self.from_account_id == self.to_account_id:
            raise ValueError("from_account_id and to_account_id must differ")
        return self


class TransferOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    from_account_id: int
    to_account_id: int
    amount: MoneyOut
    currency: str
    created_at: datetime


class LedgerEntryOut(BaseModel):
    """`transfer_id` is null for the credit of a payment (top-up)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    transfer_id: Optional[int]
    amount: MoneyOut
    balance_after: MoneyOut
    created_at: datetime
