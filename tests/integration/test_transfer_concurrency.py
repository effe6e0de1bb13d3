"""Thousands of concurrent transfers, overdrafts, replays and top-ups across
20 accounts, through the app with real commits; then the ledger invariants."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any, Dict, List, Set, Tuple

from sqlalchemy import text

from tests.integration.test_ledger import open_account, signed_up_user

N_USERS = 4
ACCOUNTS_PER_USER = 5
N_TRANSFERS = 2_200
# Fewer clients than the pool has connections (DB_POOL_SIZE + DB_MAX_OVERFLOW,
# 20 by default; each request holds one): no request ever waits for a
# connection, so nothing here depends on the order in which SQLAlchemy's pool
# serves waiters or on the pool timeout. The contention under test is on rows.
CONCURRENCY = 16


async def check_ledger_invariants(engine: Any) -> Dict[str, Any]:
    """The invariants every test and the benchmark rely on; returns figures."""
    async with engine.connect() as conn:
        total_balance = (
            await conn.execute(text("SELECT COALESCE(sum(balance), 0) FROM accounts"))
        ).scalar_one()
        total_paid = (
            await conn.execute(
                text("SELECT COALESCE(sum(amount), 0) FROM payments WHERE status = 'succeeded'")
            )
        ).scalar_one()
        negative = (
            await conn.execute(text("SELECT count(*) FROM accounts WHERE balance < 0"))
        ).scalar_one()
        drift = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM accounts a LEFT JOIN ("
                    " SELECT account_id, sum(amount) AS s FROM ledger_entries GROUP BY account_id"
                    ") e ON e.account_id = a.id WHERE a.balance <> COALESCE(e.s, 0)"
                )
            )
        ).scalar_one()
        unbalanced = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM ("
                    " SELECT t.id FROM transfers t JOIN ledger_entries e ON e.transfer_id = t.id"
                    " GROUP BY t.id HAVING count(*) <> 2 OR sum(e.amount) <> 0"
                    " OR min(e.amount) <> -max(t.amount)) x"
                )
            )
        ).scalar_one()
        transfers = (await conn.execute(text("SELECT count(*) FROM transfers"))).scalar_one()
    assert total_balance == total_paid, (total_balance, total_paid)
    assert negative == 0
    assert drift == 0
    assert unbalanced == 0
    return {"sum_balances": total_balance, "sum_payments": total_paid, "transfers": transfers}


async def test_concurrent_random_transfers_keep_every_invariant(
    committed_client: Any, engine: Any, settings: Any
) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # 2,000+ request lines are noise
    assert CONCURRENCY < settings.db_pool_size + settings.db_max_overflow
    rng = random.Random(20261125)
    users = [await signed_up_user(committed_client) for _ in range(N_USERS)]
    accounts: List[Tuple[Dict[str, Any], int]] = []
    for user in users:
        for _ in range(ACCOUNTS_PER_USER):
            account = await open_account(committed_client, user)
            accounts.append((user, account["id"]))
    for user, account_id in accounts:
        response = await committed_client.post(
            "/api/pay",
            json={"amount": rng.randint(5_000, 50_000), "account_id": account_id},
            headers=user["headers"],
        )
        assert response.status_code == 200

    # A plan of requests: fresh transfers (some overdrawing), replays of
    # earlier keys (possibly racing their original), a key reused with a
    # different body, and top-ups arriving meanwhile.
    plan: List[Tuple[str, Dict[str, Any], Dict[str, Any], str]] = []
    keyed_bodies: List[Tuple[Dict[str, Any], Dict[str, Any], str]] = []
    for _ in range(N_TRANSFERS):
        roll = rng.random()
        if roll < 0.15 and keyed_bodies:
            user, body, key = rng.choice(keyed_bodies)
            plan.append(("replay", user, body, key))
        elif roll < 0.17 and keyed_bodies:
            user, body, key = rng.choice(keyed_bodies)
            plan.append(
                (
                    "reuse",
                    user,
                    {**body, "amount": "0.01" if body["amount"] != "0.01" else "0.02"},
                    key,
                )
            )
        elif roll < 0.20:
            user, account_id = rng.choice(accounts)
            plan.append(
                ("pay", user, {"amount": rng.randint(100, 5_000), "account_id": account_id}, "")
            )
        else:
            user, source = rng.choice(accounts)
            target = rng.choice([a for _, a in accounts if a != source])
            cents = rng.randint(1, 10_000) if rng.random() < 0.9 else rng.randint(100_000, 900_000)
            body = {
                "from_account_id": source,
                "to_account_id": target,
                "amount": f"{Decimal(cents) / 100:.2f}",
            }
            key = uuid.uuid4().hex if rng.random() < 0.5 else ""
            if key:
                keyed_bodies.append((user, body, key))
            plan.append(("transfer", user, body, key))

    results: List[Tuple[str, Dict[str, Any], str, int, Any]] = []
    queue: asyncio.Queue[Tuple[str, Dict[str, Any], Dict[str, Any], str]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            kind, user, body, key = queue.get_nowait()
            headers = {**user["headers"], **({"Idempotency-Key": key} if key else {})}
            path = "/api/pay" if kind == "pay" else "/api/transfers"
            response = await committed_client.post(path, json=body, headers=headers)
            results.append((kind, body, key, response.status_code, response.json()))

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    statuses = defaultdict(int)
    for kind, _, _, status, _ in results:
        statuses[(kind, status)] += 1
    assert not [s for (_, s) in statuses if s >= 500], statuses
    assert {s for (_, s) in statuses} <= {200, 201, 400, 409}, statuses
    assert statuses[("transfer", 400)] > 20, "the plan must include real overdrafts"
    assert statuses[("replay", 201)] > 50
    assert statuses[("reuse", 409)] > 10

    # Per key: whichever body came first owns the key; every response to it
    # is identical (one effect), every other body gets 409.
    by_key: Dict[str, Dict[str, Set[str]]] = defaultdict(lambda: defaultdict(set))
    created_ids: Set[int] = set()
    for kind, body, key, status, payload in results:
        if kind != "pay" and key:
            by_key[key][repr(sorted(body.items()))].add(repr((status, payload)))
        if kind != "pay" and status == 201:
            created_ids.add(payload["id"])
    for key, bodies in by_key.items():
        owners = [
            b for b, responses in bodies.items() if not all("409" in r[:6] for r in responses)
        ]
        assert len(owners) == 1, (key, bodies)
        assert len(bodies[owners[0]]) == 1, (key, bodies)
        for other, responses in bodies.items():
            if other != owners[0]:
                assert all("idempotency_key_reused" in r for r in responses), (key, bodies)

    figures = await check_ledger_invariants(engine)
    assert figures["transfers"] == len(created_ids)


async def test_transfer_service_works_as_the_first_statement_of_a_fresh_session(
    committed_client: Any, engine: Any
) -> None:
    """No transaction open on the driver yet: the hot path falls back to
    SQLAlchemy, which begins one, and the transfer still commits atomically."""
    from app.core.db import db
    from app.ledger import service

    user = await signed_up_user(committed_client)
    source = (await open_account(committed_client, user))["id"]
    target = (await open_account(committed_client, user))["id"]
    paid = await committed_client.post(
        "/api/pay", json={"amount": 1_000, "account_id": source}, headers=user["headers"]
    )
    assert paid.status_code == 200
    async with db.sessionmaker() as session:
        transfer = await service.transfer_funds(
            session,
            user_id=user["id"],
            from_account_id=source,
            to_account_id=target,
            amount=Decimal("2.50"),
        )
        await session.commit()
    assert transfer.amount == Decimal("2.50")
    figures = await check_ledger_invariants(engine)
    assert figures["transfers"] == 1
    async with engine.connect() as conn:
        balances = dict(
            (await conn.execute(text("SELECT id, balance FROM accounts ORDER BY id"))).all()
        )
    assert balances == {source: Decimal("7.50"), target: Decimal("2.50")}
