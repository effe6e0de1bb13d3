"""Accounts and transfers: money moves only under row locks, atomically.

Every function works in the caller's session. `transfer_funds` is one of the
exceptions to "services do not commit" (docs/design.md): an *error* response
stored under an Idempotency-Key is committed before raising, because the
request session rolls back on errors and the replay must find it. Locks are
taken in ascending account id order (the idempotency row first); a deadlock
PostgreSQL still reports runs the whole transaction again (run_with_retry).
"""

from __future__ import annotations

from decimal import Decimal
from typing import List, Optional, Tuple

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.transactions import run_with_retry
from app.idempotency import service as idempotency
from app.ledger import repository
from app.ledger.errors import AccountNotFound, CurrencyMismatch, InsufficientFunds, SameAccount
from app.ledger.metrics import TRANSFERS
from app.ledger.models import Account, LedgerEntry
from app.ledger.money import format_money
from app.ledger.schemas import TransferOut

# ------------------------------------------------------------------ accounts


async def create_account(session: AsyncSession, *, owner_id: int, currency: str) -> Account:
    return await repository.add_account(session, owner_id=owner_id, currency=currency)


async def get_account(session: AsyncSession, *, account_id: int, owner_id: int) -> Account:
    """The owner's account. Raises AccountNotFound (also for other users' accounts)."""
    account = await repository.get_owned_account(session, account_id=account_id, owner_id=owner_id)
    if account is None:
        raise AccountNotFound()
    return account


async def list_accounts(
    session: AsyncSession, *, owner_id: int, limit: int, offset: int
) -> Tuple[List[Account], int]:
    return await repository.list_owned_accounts(
        session, owner_id=owner_id, limit=limit, offset=offset
    )


async def list_entries(
    session: AsyncSession, *, account_id: int, owner_id: int, limit: int, offset: int
) -> Tuple[List[LedgerEntry], int]:
    """Entries of the owner's account, newest first. Raises AccountNotFound."""
    await get_account(session, account_id=account_id, owner_id=owner_id)
    return await repository.list_entries(session, account_id=account_id, limit=limit, offset=offset)


# ------------------------------------------------------------------ transfers


async def transfer_funds(
    session: AsyncSession,
    *,
    user_id: int,
    from_account_id: int,
    to_account_id: int,
    amount: Decimal,
    idempotency_key: Optional[str] = None,
) -> TransferOut:
    """Move `amount` from the user's account to another; no balance goes
    negative (checked under the lock, and by a CHECK constraint). With an
    idempotency key the first response (success or business error) is stored
    and replayed, moving no money again. Raises AccountNotFound, SameAccount,
    CurrencyMismatch, InsufficientFunds, IdempotencyKeyReused."""
    if from_account_id == to_account_id:
        raise SameAccount()
    request_hash = None
    if idempotency_key is not None:
        ids = {"from_account_id": from_account_id, "to_account_id": to_account_id}
        body = {**ids, "amount": format_money(amount)}
        request_hash = idempotency.request_fingerprint("POST", "/api/transfers", body)

    async def attempt() -> TransferOut:
        claim = None
        if idempotency_key is not None and request_hash is not None:
            claim = await idempotency.claim_key(
                session, user_id=user_id, key=idempotency_key, request_hash=request_hash
            )
            if not claim.is_new and claim.has_response:
                TRANSFERS.labels("replayed").inc()
                idempotency.replay_error(claim)
                return TransferOut.model_validate(claim.response_body)
        try:
            result = await _move_money(
                session,
                user_id=user_id,
                from_account_id=from_account_id,
                to_account_id=to_account_id,
                amount=amount,
            )
        except (AccountNotFound, CurrencyMismatch, InsufficientFunds) as error:
            TRANSFERS.labels(error.code).inc()
            if claim is not None:
                # This commit releases the locks taken so far; no money moved.
                body = idempotency.error_response_body(error)
                await idempotency.record_response(
                    session, claim, status=error.status_code, body=body
                )
                await session.commit()
            raise
        if claim is not None:
            await idempotency.record_response(
                session, claim, status=201, body=result.model_dump(mode="json")
            )
        TRANSFERS.labels("created").inc()
        return result

    return await run_with_retry(session, attempt)


async def _move_money(
    session: AsyncSession,
    *,
    user_id: int,
    from_account_id: int,
    to_account_id: int,
    amount: Decimal,
) -> TransferOut:
    rows = await repository.lock_account_pair(session, from_account_id, to_account_id)
    locked = {a.id: a for a in rows}
    source = locked.get(from_account_id)
    target = locked.get(to_account_id)
    if source is None or source.owner_id != user_id:
        raise AccountNotFound("From-account not found")
    if target is None:
        raise AccountNotFound("To-account not found")
    if source.currency != target.currency:
        raise CurrencyMismatch(source.currency, target.currency)
    if source.balance < amount:
        raise InsufficientFunds()
    written = await repository.write_transfer(
        session,
        from_id=from_account_id,
        to_id=to_account_id,
        amount=amount,
        currency=source.currency,
    )
    return TransferOut(
        id=written.id,
        from_account_id=from_account_id,
        to_account_id=to_account_id,
        amount=amount,
        currency=source.currency,
        created_at=written.created_at,
    )


async def credit_payment(
    session: AsyncSession, *, account_id: int, amount: Decimal, payment_id: int
) -> Decimal:
    """Credit a succeeded payment with one ledger entry: the only way money
    enters the ledger. The caller holds the payment's row lock and has checked
    that it was not credited before. Returns the new balance."""
    return await repository.credit_account(
        session, account_id=account_id, amount=amount, payment_id=payment_id
    )
