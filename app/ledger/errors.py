"""Errors of the ledger domain (codes and statuses in docs/api.md)."""

from __future__ import annotations

from app.core.errors import (
    BadRequest,
    NotFound,
    UnprocessableEntity,
)


class AccountNotFound(NotFound):
    message = "Account not found"


class InsufficientFunds(BadRequest):
    code = "insufficient_funds"
    message = "Insufficient funds"


class CurrencyMismatch(UnprocessableEntity):
    """422 in the shape of a validation error (the spec lists it with them)."""

    def __init__(self, from_currency: str, to_currency: str) -> None:
        super().__init__(
            detail=[
                {
                    "type": "currency_mismatch",
                    "loc": ["body", "to_account_id"],
                    "msg": (
                        f"Currency mismatch: the from-account holds {from_currency}, "
                        f"the to-account holds {to_currency}"
                    ),
                    "input": None,
                }
            ]
        )


class SameAccount(UnprocessableEntity):
    def __init__(self) -> None:
        super().__init__(
            detail=[
                {
                    "type": "same_account",
                    "loc": ["body", "to_account_id"],
                    "msg": "from_account_id and to_account_id must differ",
                    "input": None,
                }
            ]
        )
