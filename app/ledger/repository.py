"""All SQL of the ledger domain: accounts, row locks, transfers, entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, List, Optional, Sequence, Tuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.pagination import PageQuery, fetch_page
from app.ledger.models import Account, LedgerEntry


@dataclass(frozen=True)
class LockedAccount:
    id: int
    owner_id: int
    currency: str
    balance: Decimal


@dataclass(frozen=True)
class WrittenTransfer:
    id: int
    created_at: datetime


# ------------------------------------------------------------------ accounts


async def add_account(session: AsyncSession, *, owner_id: int, currency: str) -> Account:
    account = Account(owner_id=owner_id, currency=currency)
    session.add(account)
    await session.flush()
    await session.refresh(account)
    return account


async def get_owned_account(
    session: AsyncSession, *, account_id: int, owner_id: int
) -> Optional[Account]:
    stmt = select(Account).where(Account.id == account_id, Account.owner_id == owner_id)
    return (await session.execute(stmt)).scalar_one_or_none()


_OWNED_ACCOUNTS = PageQuery(
    lambda: select(Account).where(Account.owner_id == bindparam("owner_id")).order_by(Account.id)
)


async def list_owned_accounts(
    session: AsyncSession, *, owner_id: int, limit: int, offset: int
) -> Tuple[List[Account], int]:
    """A page of the owner's accounts, oldest first, and the total."""
    return await fetch_page(
        session, _OWNED_ACCOUNTS, limit=limit, offset=offset, params={"owner_id": owner_id}
    )


# The transfer is the hot path: two hand-written statements (lock the pair,
# then every write in one CTE), run in the session's transaction through
# SQLAlchemy's `exec_driver_sql` (no statement compilation per request).
_LOCK_PAIR_SQL = """
    SELECT id, owner_id, currency, balance FROM accounts
    WHERE id IN ($1, $2)
    ORDER BY id
    FOR UPDATE
"""

_WRITE_TRANSFER_SQL = """
    WITH debit AS (
        UPDATE accounts SET balance = balance - $3::numeric
        WHERE id = $1 RETURNING balance
    ), credit AS (
        UPDATE accounts SET balance = balance + $3::numeric
        WHERE id = $2 RETURNING balance
    ), moved AS (
        INSERT INTO transfers (from_account_id, to_account_id, amount, currency)
        VALUES ($1, $2, $3::numeric, $4::varchar)
        RETURNING id, created_at
    ), entries AS (
        INSERT INTO ledger_entries (account_id, transfer_id, amount, balance_after)
        SELECT $1::integer, moved.id, -$3::numeric, debit.balance FROM moved, debit
        UNION ALL
        SELECT $2::integer, moved.id, $3::numeric, credit.balance FROM moved, credit
    )
    SELECT id, created_at FROM moved
"""


async def _fetch(session: AsyncSession, sql: str, *args: Any) -> List[Sequence[Any]]:
    """Rows of a hot-path statement, inside the session's transaction."""
    connection = await session.connection()
    # numeric_dollar is the asyncpg dialect's paramstyle: `$n` SQL as written.
    result = await connection.exec_driver_sql(sql, tuple(args))
    return list(result.all())


async def lock_account_pair(session: AsyncSession, first: int, second: int) -> List[LockedAccount]:
    """`SELECT ... FOR UPDATE` two rows in ascending id order (the sort runs
    below the lock, so every transaction acquires the locks in the same
    order and concurrent transfers cannot deadlock). Missing ids are absent."""
    rows = await _fetch(session, _LOCK_PAIR_SQL, first, second)
    return [LockedAccount(id=r[0], owner_id=r[1], currency=r[2], balance=r[3]) for r in rows]


# ------------------------------------------------------------------ transfers


async def write_transfer(
    session: AsyncSession, *, from_id: int, to_id: int, amount: Decimal, currency: str
) -> WrittenTransfer:
    """Both balance updates, the transfer row and its debit and credit
    entries (with balance_after) in one statement. The caller holds the row
    locks and has checked the funds."""
    (row,) = await _fetch(session, _WRITE_TRANSFER_SQL, from_id, to_id, amount, currency)
    return WrittenTransfer(id=row[0], created_at=row[1])


async def credit_account(
    session: AsyncSession, *, account_id: int, amount: Decimal, payment_id: int
) -> Decimal:
    """Add a payment to a balance and write its credit entry. The unique
    constraint on ledger_entries.payment_id makes a second credit of the same
    payment fail rather than succeed."""
    stmt = (
        update(Account)
        .where(Account.id == account_id)
        .values(balance=Account.balance + amount)
        .returning(Account.balance)
    )
    balance_after = (await session.execute(stmt)).scalar_one()
    session.add(
        LedgerEntry(
            account_id=account_id, payment_id=payment_id, amount=amount, balance_after=balance_after
        )
    )
    await session.flush()
    return Decimal(balance_after)


# ------------------------------------------------------------------ entries


_ENTRIES = PageQuery(
    lambda: (
        select(LedgerEntry)
        .where(LedgerEntry.account_id == bindparam("account_id"))
        .order_by(LedgerEntry.id.desc())
    )
)


async def list_entries(
    session: AsyncSession, *, account_id: int, limit: int, offset: int
) -> Tuple[List[LedgerEntry], int]:
    """A page of the account's entries, newest first, and the total."""
    return await fetch_page(
        session, _ENTRIES, limit=limit, offset=offset, params={"account_id": account_id}
    )
