"""The bounded retry around money transactions (no I/O: a fake session)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, List

import pytest
from sqlalchemy.exc import DBAPIError

from app.core import transactions as service
from app.ledger.money import format_money, minor_to_money, money_to_minor


class FakeOrig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class FakeSession:
    def __init__(self) -> None:
        self.rollbacks = 0

    async def rollback(self) -> None:
        self.rollbacks += 1


def db_error(sqlstate: str) -> DBAPIError:
    return DBAPIError("UPDATE accounts ...", {}, FakeOrig(sqlstate))


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
async def test_deadlock_and_serialization_failure_roll_back_and_run_again(sqlstate: str) -> None:
    session = FakeSession()
    calls: List[int] = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise db_error(sqlstate)
        return "done"

    assert await service.run_with_retry(session, attempt) == "done"  # type: ignore[arg-type]
    assert len(calls) == 3 and session.rollbacks == 2


async def test_driver_level_deadlock_is_retried_too() -> None:
    import asyncpg

    session = FakeSession()
    calls: List[int] = []

    async def attempt() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return "done"

    assert await service.run_with_retry(session, attempt) == "done"  # type: ignore[arg-type]
    assert session.rollbacks == 1


async def test_other_database_errors_are_not_retried() -> None:
    session = FakeSession()

    async def attempt() -> Any:
        raise db_error("23505")

    with pytest.raises(DBAPIError):
        await service.run_with_retry(session, attempt)  # type: ignore[arg-type]
    assert session.rollbacks == 0


async def test_retries_are_bounded() -> None:
    session = FakeSession()
    calls: List[int] = []

    async def attempt() -> Any:
        calls.append(1)
        raise db_error("40P01")

    with pytest.raises(DBAPIError):
        await service.run_with_retry(session, attempt)  # type: ignore[arg-type]
    assert len(calls) == service.MAX_ATTEMPTS


def test_minor_units_convert_exactly() -> None:
    assert minor_to_money(1) == Decimal("0.01")
    assert minor_to_money(99_999_999) == Decimal("999999.99")
    assert money_to_minor(Decimal("12.34")) == 1234
    assert format_money(Decimal("5")) == "5.00"
    assert format_money(Decimal("-0.1")) == "-0.10"
