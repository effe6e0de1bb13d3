"""Money values: `Decimal` with two places, validated at the boundary."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema
from typing_extensions import Annotated

CENT = Decimal("0.01")
# NUMERIC(18, 2) holds 16 integer digits; anything above 10^15 is absurd input.
MAX_AMOUNT = Decimal("1000000000000000")
# A positive amount written as a string: digits, at most 2 decimals, not zero.
AMOUNT_PATTERN = (
    r"^(0*[1-9][0-9]{0,14}(\.[0-9]{1,2})?|0*\.(0[1-9]|[1-9][0-9]?)|0+\.(0[1-9]|[1-9][0-9]?))$"
)
_AMOUNT_STRING = re.compile(AMOUNT_PATTERN)
# Provider limit style cap for one top-up, in minor units (999,999.99).
MAX_PAYMENT_MINOR = 99_999_999


def _parse_amount(value: Any) -> Any:
    """Exactly what the published schema allows: a string of digits with at
    most 2 decimals (no exponent, sign or spaces). A JSON number is refused:
    a client that sends one has already been through a binary float."""
    if isinstance(value, Decimal):  # from Python callers, never from JSON
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError('amount must be a decimal string such as "12.50", not a JSON number')
    if not isinstance(value, str):
        raise ValueError('amount must be a decimal string such as "12.50"')
    if not _AMOUNT_STRING.match(value):
        raise ValueError("amount must be a positive decimal string with at most 2 places")
    return Decimal(value)


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


PositiveAmount = Annotated[
    Decimal,
    BeforeValidator(_parse_amount),
    AfterValidator(_check_amount),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": AMOUNT_PATTERN,
            "description": "A decimal string with at most 2 places, > 0 and at most 10^15; "
            "JSON numbers are refused",
            "examples": ["12.50"],
        }
    ),
]
"""A request amount: > 0, at most 2 decimal places, finite, bounded."""

MoneyOut = Annotated[Decimal, PlainSerializer(format_money, return_type=str, when_used="always")]
"""A money value in a response: always a 2-place string."""
