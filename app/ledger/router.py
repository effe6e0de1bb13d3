from __future__ import annotations

from fastapi import APIRouter, status

from app.auth.dependencies import CurrentUser
from app.core.db import DbSession
from app.core.pagination import NoQuery, Page, Pagination
from app.core.routing import KeelRoute
from app.core.schemas import IdPath, error_responses
from app.idempotency.dependencies import IdempotencyKeyHeader
from app.ledger import service
from app.ledger.schemas import (
    AccountCreate,
    AccountOut,
    LedgerEntryOut,
    TransferCreate,
    TransferOut,
)

router = APIRouter(prefix="/api", tags=["ledger"], route_class=KeelRoute)


@router.post(
    "/accounts",
    dependencies=[NoQuery],
    response_model=AccountOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 422),
)
async def create_account(body: AccountCreate, session: DbSession, user: CurrentUser) -> AccountOut:
    account = await service.create_account(session, owner_id=user.id, currency=body.currency)
    return AccountOut.model_validate(account)


@router.get("/accounts", response_model=Page[AccountOut], responses=error_responses(401, 422))
async def list_accounts(
    session: DbSession, user: CurrentUser, page: Pagination
) -> Page[AccountOut]:
    accounts, total = await service.list_accounts(
        session, owner_id=user.id, limit=page.limit, offset=page.offset
    )
    return Page[AccountOut](
        items=[AccountOut.model_validate(a) for a in accounts],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/accounts/{account_id}",
    dependencies=[NoQuery],
    response_model=AccountOut,
    responses=error_responses(401, 404, 422),
)
async def read_account(account_id: IdPath, session: DbSession, user: CurrentUser) -> AccountOut:
    account = await service.get_account(session, account_id=account_id, owner_id=user.id)
    return AccountOut.model_validate(account)


@router.get(
    "/accounts/{account_id}/entries",
    response_model=Page[LedgerEntryOut],
    responses=error_responses(401, 404, 422),
)
async def list_entries(
    account_id: IdPath,
    session: DbSession,
    user: CurrentUser,
    page: Pagination,
) -> Page[LedgerEntryOut]:
    entries, total = await service.list_entries(
        session, account_id=account_id, owner_id=user.id, limit=page.limit, offset=page.offset
    )
    return Page[LedgerEntryOut](
        items=[LedgerEntryOut.model_validate(e) for e in entries],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "/transfers",
    dependencies=[NoQuery],
    response_model=TransferOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 404, 409, 422),
)
async def create_transfer(
    body: TransferCreate,
    session: DbSession,
    user: CurrentUser,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TransferOut:
    return await service.transfer_funds(
        session,
        user_id=user.id,
        from_account_id=body.from_account_id,
        to_account_id=body.to_account_id,
        amount=body.amount,
        idempotency_key=idempotency_key,
    )
