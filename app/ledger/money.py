"""Money values: `Decimal` with two places, validated at the boundary."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer
from typing_extensions import Annotated

CENT = Decimal("0.01")
# NUMERIC(18, 2) holds up to 16 integer digits; larger amounts are absurd input.
MAX_AMOUNT = Decimal("9999999999999999.99")
# Provider limit style cap for one top-up, in minor units (999,999.99).
MAX_PAYMENT_MINOR = 99_999_999


def _reject_bool(value: Any) -> Any:
    # bool is an int in Python; `true` is not an amount.
    if isinstance(value, bool):
        raise ValueError("amount must be a number, not a boolean")
    return value


def _check_amount(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("amount must be a finite number")
    if value <= 0:
        raise ValueError("amount must be greater than 0")
    if value > MAX_AMOUNT:
        raise ValueError(f"amount must be at most {MAX_AMOUNT}")
    if value != value.quantize(CENT):
        raise ValueError("amount must have at most 2 decimal places")
    return value.quantize(CENT)


def format_money(value: Decimal) -> str:
    """A 2-place string: the JSON form of every money value."""
    return str(Decimal(value).quantize(CENT))


def minor_to_money(minor: int) -> Decimal:
    return (Decimal(minor) / 100).quantize(CENT)


def money_to_minor(value: Decimal) -> int:
    return int((Decimal(value) * 100).to_integral_exact())


PositiveAmount = Annotated[Decimal, BeforeValidator(_reject_bool), AfterValidator(_check_amount)]
"""A request amount: > 0, at most 2 decimal places, finite, bounded."""

MoneyOut = Annotated[Decimal, PlainSerializer(format_money, return_type=str, when_used="always")]
"""A money value in a response: always a 2-place string."""
