"""Accounts, transfers, entries and idempotency over HTTP on real PostgreSQL."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Callable, Dict

import pytest


async def open_account(client: Any, user: Dict[str, Any], currency: str = "USD") -> Dict[str, Any]:
    response = await client.post(
        "/api/accounts", json={"currency": currency}, headers=user["headers"]
    )
    assert response.status_code == 201, response.text
    return response.json()


async def top_up(client: Any, user: Dict[str, Any], account_id: int, cents: int) -> None:
    response = await client.post(
        "/api/pay", json={"amount": cents, "account_id": account_id}, headers=user["headers"]
    )
    assert response.status_code == 200, response.text


async def balance(client: Any, user: Dict[str, Any], account_id: int) -> str:
    response = await client.get(f"/api/accounts/{account_id}", headers=user["headers"])
    assert response.status_code == 200
    return response.json()["balance"]


def keyed(user: Dict[str, Any], key: str) -> Dict[str, str]:
    return {**user["headers"], "Idempotency-Key": key}


# ------------------------------------------------------------------ accounts


async def test_create_account_returns_zero_balance_as_two_place_string(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    account = await open_account(client, user, "EUR")
    assert set(account) == {"id", "owner_id", "currency", "balance", "created_at"}
    assert account["owner_id"] == user["id"]
    assert account["currency"] == "EUR"
    assert account["balance"] == "0.00"


@pytest.mark.parametrize("currency", ["", "US", "USDX", "ABC", "usd", " USD", 840, None, ["USD"]])
async def test_create_account_rejects_non_iso_currency(
    client: Any, make_user: Callable[..., Any], currency: Any
) -> None:
    user = await make_user()
    response = await client.post(
        "/api/accounts", json={"currency": currency}, headers=user["headers"]
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_accounts_require_a_bearer_token(client: Any) -> None:
    response = await client.get("/api/accounts")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_accounts_are_listed_and_read_only_by_their_owner(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice, bob = await make_user(), await make_user()
    first = await open_account(client, alice)
    second = await open_account(client, alice, "EUR")
    await open_account(client, bob)

    listed = await client.get("/api/accounts", headers=alice["headers"])
    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == 2 and body["limit"] == 50 and body["offset"] == 0
    assert [a["id"] for a in body["items"]] == [first["id"], second["id"]]

    assert (
        await client.get(f"/api/accounts/{first['id']}", headers=bob["headers"])
    ).status_code == 404
    own = await client.get(f"/api/accounts/{first['id']}", headers=alice["headers"])
    assert own.status_code == 200 and own.json() == first
    assert (await client.get("/api/accounts/999999", headers=alice["headers"])).status_code == 404


# ------------------------------------------------------------------ transfers


async def test_transfer_moves_money_and_writes_debit_and_credit_entries(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice, bob = await make_user(), await make_user()
    source = await open_account(client, alice)
    target = await open_account(client, bob)
    await top_up(client, alice, source["id"], 10_000)

    response = await client.post(
        "/api/transfers",
        json={"from_account_id": source["id"], "to_account_id": target["id"], "amount": "12.50"},
        headers=alice["headers"],
    )
    assert response.status_code == 201, response.text
    transfer = response.json()
    assert set(transfer) == {
        "id",
        "from_account_id",
        "to_account_id",
        "amount",
        "currency",
        "created_at",
    }
    assert transfer["amount"] == "12.50" and transfer["currency"] == "USD"
    assert await balance(client, alice, source["id"]) == "87.50"
    assert await balance(client, bob, target["id"]) == "12.50"

    entries = (
        await client.get(f"/api/accounts/{source['id']}/entries", headers=alice["headers"])
    ).json()
    assert entries["total"] == 2
    newest, oldest = entries["items"]
    assert set(newest) == {"id", "transfer_id", "amount", "balance_after", "created_at"}
    assert newest["transfer_id"] == transfer["id"]
    assert newest["amount"] == "-12.50" and newest["balance_after"] == "87.50"
    assert oldest["transfer_id"] is None and oldest["amount"] == "100.00"
    credit = (
        await client.get(f"/api/accounts/{target['id']}/entries", headers=bob["headers"])
    ).json()
    assert (
        credit["items"][0]["amount"] == "12.50" and credit["items"][0]["balance_after"] == "12.50"
    )


async def test_transfer_accepts_whole_amount_string_and_whole_balance(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    source, target = await open_account(client, alice), await open_account(client, alice)
    await top_up(client, alice, source["id"], 1_000)
    response = await client.post(
        "/api/transfers",
        json={"from_account_id": source["id"], "to_account_id": target["id"], "amount": "10"},
        headers=alice["headers"],
    )
    assert response.status_code == 201
    assert response.json()["amount"] == "10.00"
    assert await balance(client, alice, source["id"]) == "0.00"


async def test_transfer_rejects_overdraft_with_400_and_moves_nothing(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    source, target = await open_account(client, alice), await open_account(client, alice)
    await top_up(client, alice, source["id"], 500)
    response = await client.post(
        "/api/transfers",
        json={"from_account_id": source["id"], "to_account_id": target["id"], "amount": "5.01"},
        headers=alice["headers"],
    )
    assert response.status_code == 400
    assert response.json()["code"] == "insufficient_funds"
    assert await balance(client, alice, source["id"]) == "5.00"
    assert await balance(client, alice, target["id"]) == "0.00"


async def test_transfer_from_someone_elses_account_is_404(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice, mallory = await make_user(), await make_user()
    source = await open_account(client, alice)
    await top_up(client, alice, source["id"], 500)
    loot = await open_account(client, mallory)
    response = await client.post(
        "/api/transfers",
        json={"from_account_id": source["id"], "to_account_id": loot["id"], "amount": "1.00"},
        headers=mallory["headers"],
    )
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert await balance(client, alice, source["id"]) == "5.00"


async def test_transfer_to_missing_account_is_404(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    source = await open_account(client, alice)
    await top_up(client, alice, source["id"], 500)
    response = await client.post(
        "/api/transfers",
        json={"from_account_id": source["id"], "to_account_id": 2_000_000_000, "amount": "1.00"},
        headers=alice["headers"],
    )
    assert response.status_code == 404


async def test_transfer_between_currencies_is_422(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    usd, eur = await open_account(client, alice, "USD"), await open_account(client, alice, "EUR")
    await top_up(client, alice, usd["id"], 500)
    response = await client.post(
        "/api/transfers",
        json={"from_account_id": usd["id"], "to_account_id": eur["id"], "amount": "1.00"},
        headers=alice["headers"],
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert await balance(client, alice, usd["id"]) == "5.00"


@pytest.mark.parametrize(
    "amount",
    [
        "0",
        "0.00",
        "-1.00",
        0,
        -5,
        "1.001",
        0.001,
        "NaN",
        "Infinity",
        "-Infinity",
        "1e20",
        "99999999999999999",
        True,
        None,
        "",
        "abc",
        [],
        {"v": 1},
    ],
)
async def test_transfer_rejects_bad_amounts_with_422(
    client: Any, make_user: Callable[..., Any], amount: Any
) -> None:
    alice = await make_user()
    source, target = await open_account(client, alice), await open_account(client, alice)
    response = await client.post(
        "/api/transfers",
        json={"from_account_id": source["id"], "to_account_id": target["id"], "amount": amount},
        headers=alice["headers"],
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_transfer_to_the_same_account_is_422(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    source = await open_account(client, alice)
    response = await client.post(
        "/api/transfers",
        json={"from_account_id": source["id"], "to_account_id": source["id"], "amount": "1.00"},
        headers=alice["headers"],
    )
    assert response.status_code == 422


async def test_transfer_requires_authentication(client: Any) -> None:
    response = await client.post(
        "/api/transfers", json={"from_account_id": 1, "to_account_id": 2, "amount": "1.00"}
    )
    assert response.status_code == 401


# ------------------------------------------------------------------ idempotency


async def test_transfer_replay_with_same_key_returns_first_response_and_moves_nothing(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    source, target = await open_account(client, alice), await open_account(client, alice)
    await top_up(client, alice, source["id"], 1_000)
    body = {"from_account_id": source["id"], "to_account_id": target["id"], "amount": "3.00"}
    key = uuid.uuid4().hex
    first = await client.post("/api/transfers", json=body, headers=keyed(alice, key))
    again = await client.post(
        "/api/transfers", json={**body, "amount": "3"}, headers=keyed(alice, key)
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert await balance(client, alice, source["id"]) == "7.00"
    entries = (
        await client.get(f"/api/accounts/{target['id']}/entries", headers=alice["headers"])
    ).json()
    assert entries["total"] == 1


async def test_same_key_with_different_body_is_409(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    source, target = await open_account(client, alice), await open_account(client, alice)
    await top_up(client, alice, source["id"], 1_000)
    body = {"from_account_id": source["id"], "to_account_id": target["id"], "amount": "3.00"}
    key = uuid.uuid4().hex
    assert (
        await client.post("/api/transfers", json=body, headers=keyed(alice, key))
    ).status_code == 201
    reused = await client.post(
        "/api/transfers", json={**body, "amount": "4.00"}, headers=keyed(alice, key)
    )
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_key_reused"
    assert await balance(client, alice, source["id"]) == "7.00"


async def test_keys_are_per_user(client: Any, make_user: Callable[..., Any]) -> None:
    alice, bob = await make_user(), await make_user()
    a1, a2 = await open_account(client, alice), await open_account(client, alice)
    b1, b2 = await open_account(client, bob), await open_account(client, bob)
    await top_up(client, alice, a1["id"], 1_000)
    await top_up(client, bob, b1["id"], 1_000)
    key = "shared-key"
    for user, src, dst in ((alice, a1, a2), (bob, b1, b2)):
        body = {"from_account_id": src["id"], "to_account_id": dst["id"], "amount": "1.00"}
        response = await client.post("/api/transfers", json=body, headers=keyed(user, key))
        assert response.status_code == 201
    assert await balance(client, bob, b2["id"]) == "1.00"


async def test_replayed_overdraft_returns_the_stored_400_even_after_a_top_up(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    source, target = await open_account(client, alice), await open_account(client, alice)
    body = {"from_account_id": source["id"], "to_account_id": target["id"], "amount": "2.00"}
    key = uuid.uuid4().hex
    first = await client.post("/api/transfers", json=body, headers=keyed(alice, key))
    assert first.status_code == 400
    await top_up(client, alice, source["id"], 1_000)
    again = await client.post("/api/transfers", json=body, headers=keyed(alice, key))
    assert again.status_code == 400 and again.json() == first.json()
    assert await balance(client, alice, source["id"]) == "10.00"


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "caf\u00e9"])
async def test_malformed_idempotency_key_is_422(
    client: Any, make_user: Callable[..., Any], key: str
) -> None:
    alice = await make_user()
    source, target = await open_account(client, alice), await open_account(client, alice)
    body = {"from_account_id": source["id"], "to_account_id": target["id"], "amount": "1.00"}
    headers = {**alice["headers"], "Idempotency-Key": key.encode("utf-8")}
    response = await client.post("/api/transfers", json=body, headers=headers)
    assert response.status_code == 422


# ------------------------------------------------------------------ entries


async def test_entries_are_paged_newest_first_and_private(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice, bob = await make_user(), await make_user()
    source, target = await open_account(client, alice), await open_account(client, alice)
    await top_up(client, alice, source["id"], 1_000)
    for cents in ("1.00", "2.00", "3.00"):
        body = {"from_account_id": source["id"], "to_account_id": target["id"], "amount": cents}
        assert (
            await client.post("/api/transfers", json=body, headers=alice["headers"])
        ).status_code == 201
    page = await client.get(
        f"/api/accounts/{source['id']}/entries?limit=2&offset=1", headers=alice["headers"]
    )
    assert page.status_code == 200
    body = page.json()
    assert body["total"] == 4 and body["limit"] == 2 and body["offset"] == 1
    assert [e["amount"] for e in body["items"]] == ["-2.00", "-1.00"]
    assert [Decimal(e["balance_after"]) for e in body["items"]] == [
        Decimal("7.00"),
        Decimal("9.00"),
    ]
    hidden = await client.get(f"/api/accounts/{source['id']}/entries", headers=bob["headers"])
    assert hidden.status_code == 404
    too_big = await client.get(
        f"/api/accounts/{source['id']}/entries?limit=101", headers=alice["headers"]
    )
    assert too_big.status_code == 422


async def signed_up_user(client: Any) -> Dict[str, Any]:
    """Sign up and log in through `client` (for committed_client tests,
    where the `make_user` fixture's rolled-back session must not be used)."""
    from tests.conftest import unique_email

    email = unique_email()
    created = await client.post(
        "/api/users", json={"email": email, "password": "password-1", "name": "A"}
    )
    assert created.status_code == 201
    tokens = await client.post("/token", data={"username": email, "password": "password-1"})
    assert tokens.status_code == 200
    return {
        **created.json(),
        "headers": {"Authorization": f"Bearer {tokens.json()['access_token']}"},
    }


@pytest.mark.parametrize("amount", [0.1, 10, 12.5, 1e2])
async def test_transfer_amount_as_a_json_number_is_422_asking_for_a_string(
    client: Any, make_user: Callable[..., Any], amount: Any
) -> None:
    """Money is never a JSON float: a number is refused, whatever its value."""
    alice = await make_user()
    source, target = await open_account(client, alice), await open_account(client, alice)
    await top_up(client, alice, source["id"], 10_000)
    response = await client.post(
        "/api/transfers",
        json={"from_account_id": source["id"], "to_account_id": target["id"], "amount": amount},
        headers=alice["headers"],
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    [error] = body["detail"]
    assert error["loc"] == ["body", "amount"]
    assert '"12.50"' in error["msg"]
    assert await balance(client, alice, source["id"]) == "100.00"


def test_transfer_amount_schema_is_a_string_only() -> None:
    from app.ledger.schemas import TransferCreate

    schema = TransferCreate.model_json_schema()["properties"]["amount"]
    assert schema["type"] == "string" and "pattern" in schema
    assert "anyOf" not in schema
