"""Steady mixed load through the load balancer, for deploy/cluster.sh drill.

    loadgen.py --base http://10.200.0.10 --out DIR [--max-seconds 540]

Runs inside the cluster's `client` namespace. First it seeds (users, funded
USD accounts) and writes DIR/seed.json; then a fixed set of closed-loop
clients, each pausing briefly between requests, runs until DIR/stop appears
or --max-seconds pass:

- 2 readers: GET /api/users/me and GET /api/accounts/{id}/entries;
- 2 transferers: POST /api/transfers with an Idempotency-Key, moving money
  only among their own six accounts, from the payer's fullest account to the
  emptiest of the six (`Pot`), so transfers keep succeeding however long
  the run;
- 1 mailer: POST /api/send-email/{own id};
- 1 predictor: POST /api/predict;
- 1 sign-up every ~2 s: POST /api/users (bcrypt at production cost);
- 1 login every ~1 s: POST /token (throttling counters live in Redis).

Every request becomes one line of DIR/events.jsonl: op, start and end time,
status (0 for a transport error), the answering host (HAProxy's
X-Keel-Host), the error code, and for acknowledged writes what the drills
check later (transfer id and amount, job id, user id). Nothing is retried by
the client: every failure is visible in the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import httpx

PASSWORD = "cluster-password-1"
SEED_USERS = 4
ACCOUNTS_PER_USER = 3
SEED_CENTS = 10_000  # 100.00 each; ends in 00: the fake provider accepts it
PAUSE = 0.05  # between a client's requests: steady load, not saturation


class Recorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending: List[Dict[str, Any]] = []

    def add(self, event: Dict[str, Any]) -> None:
        self.pending.append(event)

    async def flush(self) -> None:
        if not self.pending:
            return
        lines, self.pending = self.pending, []
        text = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in lines)
        await asyncio.get_running_loop().run_in_executor(None, self._append, text)

    def _append(self, text: str) -> None:
        with self.path.open("a") as out:
            out.write(text)


class Load:
    def __init__(self, http: httpx.AsyncClient, recorder: Recorder, stop: asyncio.Event) -> None:
        self.http = http
        self.recorder = recorder
        self.stop = stop

    async def call(self, op: str, method: str, url: str, **kwargs: Any) -> Optional[httpx.Response]:
        started = time.time()
        event: Dict[str, Any] = {"op": op, "t0": started}
        response: Optional[httpx.Response] = None
        try:
            response = await self.http.request(method, url, **kwargs)
            event["status"] = response.status_code
            event["host"] = response.headers.get("x-keel-host")
            if response.status_code >= 400:
                try:
                    event["code"] = response.json().get("code")
                except ValueError:
                    event["code"] = None
        except httpx.HTTPError as exc:
            event["status"] = 0
            event["error"] = type(exc).__name__
        event["t1"] = time.time()
        self.recorder.add(event)
        return response

    async def pause(self, seconds: float = PAUSE) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass


async def expect(response: httpx.Response, status: int) -> Dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(
            f"seeding: {response.request.method} {response.request.url.path} -> "
            f"{response.status_code} {response.text[:300]}"
        )
    return response.json() if response.content else {}


async def wait_ready(http: httpx.AsyncClient, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if (await http.get("/ready")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError("the cluster never answered /ready through the load balancer")


async def seed(http: httpx.AsyncClient) -> Dict[str, Any]:
    users = []
    for i in range(SEED_USERS):
        email = f"seed{i}-{uuid.uuid4().hex[:8]}@example.com"
        user = await expect(
            await http.post(
                "/api/users", json={"email": email, "password": PASSWORD, "name": f"seed{i}"}
            ),
            201,
        )
        token = await expect(
            await http.post("/token", data={"username": email, "password": PASSWORD}), 200
        )
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        accounts = []
        for _ in range(ACCOUNTS_PER_USER):
            account = await expect(
                await http.post("/api/accounts", json={"currency": "USD"}, headers=headers), 201
            )
            await expect(
                await http.post(
                    "/api/pay",
                    json={"amount": SEED_CENTS, "account_id": account["id"]},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                ),
                200,
            )
            accounts.append(int(account["id"]))
        users.append({"id": user["id"], "email": email, "headers": headers, "accounts": accounts})
    model = await expect(await http.get("/api/models/active", headers=users[0]["headers"]), 200)
    return {
        "users": users,
        "funded_cents": SEED_USERS * ACCOUNTS_PER_USER * SEED_CENTS,
        "n_features": int(model["n_features"]),
    }


async def reader(load: Load, user: Dict[str, Any]) -> None:
    account = user["accounts"][0]
    while not load.stop.is_set():
        await load.call("me", "GET", "/api/users/me", headers=user["headers"])
        await load.pause()
        await load.call(
            "entries", "GET", f"/api/accounts/{account}/entries", headers=user["headers"]
        )
        await load.pause()


class Pot:
    """The transferers' accounts and their balances in cents, as acknowledged
    transfers moved them (nothing else moves money on these accounts).

    Money stays among these accounts and goes where there is least: each
    transfer pays from the payer's fullest account into the emptiest of all
    of them (either user's, so the two transferers still meet on the same
    rows). Every balance stays near its seed, far above one transfer, and a
    transfer answers 201 whenever keel is up. Paid to random accounts, as it
    once was, the money drained into the readers' accounts within a minute;
    from then on most transfers answered 400 insufficient_funds, and drill 4,
    which waits for a 201 after PostgreSQL is back, measured the luck of a
    transfer that still fit, not recovery.
    """

    def __init__(self, owners: Dict[int, List[int]], cents_each: int) -> None:
        self.owners = owners
        self.balance = {a: cents_each for accounts in owners.values() for a in accounts}

    def pick(self, user_id: int) -> Tuple[int, int]:
        source = max(self.owners[user_id], key=lambda a: self.balance[a])
        target = min((a for a in self.balance if a != source), key=lambda a: self.balance[a])
        return source, target

    def moved(self, source: int, target: int, cents: int) -> None:
        self.balance[source] -= cents
        self.balance[target] += cents


async def transferer(load: Load, user: Dict[str, Any], pot: Pot, seed: int) -> None:
    rng = random.Random(seed)
    while not load.stop.is_set():
        source, target = pot.pick(user["id"])
        cents = rng.randint(1, 500)
        amount = str(Decimal(cents) / 100)
        key = uuid.uuid4().hex
        response = await load.call(
            "transfer",
            "POST",
            "/api/transfers",
            json={"from_account_id": source, "to_account_id": target, "amount": amount},
            headers={**user["headers"], "Idempotency-Key": key},
        )
        if response is not None and response.status_code == 201:
            pot.moved(source, target, cents)
            body = response.json()
            load.recorder.add(
                {"ack": "transfer", "id": body["id"], "amount": body["amount"], "key": key}
            )
        await load.pause()


async def mailer(load: Load, user: Dict[str, Any]) -> None:
    n = 0
    while not load.stop.is_set():
        n += 1
        response = await load.call(
            "send_email",
            "POST",
            f"/api/send-email/{user['id']}",
            json={"subject": f"drill {n}", "body": "hello from the cluster drill"},
            headers=user["headers"],
        )
        if response is not None and response.status_code == 202:
            load.recorder.add({"ack": "job", "id": response.json()["job_id"]})
        await load.pause(0.1)


async def predictor(load: Load, user: Dict[str, Any], n_features: int) -> None:
    rng = random.Random(3)
    while not load.stop.is_set():
        features = [rng.uniform(0, 20) for _ in range(n_features)]
        await load.call(
            "predict", "POST", "/api/predict", json={"features": features}, headers=user["headers"]
        )
        await load.pause()


async def signer(load: Load) -> None:
    while not load.stop.is_set():
        email = f"load-{uuid.uuid4().hex[:12]}@example.com"
        response = await load.call(
            "signup", "POST", "/api/users", json={"email": email, "password": PASSWORD, "name": "L"}
        )
        if response is not None and response.status_code == 201:
            load.recorder.add({"ack": "user", "id": response.json()["id"]})
        await load.pause(2.0)


async def login(load: Load, email: str) -> None:
    while not load.stop.is_set():
        # Logins are slow (bcrypt): a drill needs to know one has begun.
        load.recorder.add({"ack": "login_started", "t": time.time()})
        await load.call("login", "POST", "/token", data={"username": email, "password": PASSWORD})
        await load.pause(1.0)


async def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    recorder = Recorder(out / "events.jsonl")
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    # retries=1: only a failed *connect* is retried (never a sent request).
    transport = httpx.AsyncHTTPTransport(retries=1, limits=limits)
    timeout = httpx.Timeout(45.0, connect=5.0)
    async with httpx.AsyncClient(base_url=args.base, timeout=timeout, transport=transport) as http:
        await wait_ready(http, 180)
        seeded = await seed(http)
        (out / "seed.json").write_text(json.dumps(seeded))
        load = Load(http, recorder, stop)
        users = seeded["users"]
        pot = Pot({u["id"]: u["accounts"] for u in users[2:4]}, SEED_CENTS)
        tasks = [
            asyncio.ensure_future(c)
            for c in (
                reader(load, users[0]),
                reader(load, users[1]),
                transferer(load, users[2], pot, 1),
                transferer(load, users[3], pot, 2),
                mailer(load, users[0]),
                predictor(load, users[1], seeded["n_features"]),
                signer(load),
                login(load, users[3]["email"]),
            )
        ]
        deadline = time.monotonic() + args.max_seconds
        stop_file = out / "stop"
        while time.monotonic() < deadline and not stop_file.exists():
            await asyncio.sleep(0.25)
            await recorder.flush()
        stop.set()
        # In-flight requests finish (or hit their own timeout).
        await asyncio.wait(tasks, timeout=60)
        for task in tasks:
            task.cancel()
        await recorder.flush()


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args))
    (out / "done").write_text(str(time.time()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-seconds", type=float, default=540)
    run(parser.parse_args())
