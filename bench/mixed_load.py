"""Mixed load on `keel serve` (gunicorn, 2 uvicorn workers), 64 clients, 60 s.

    .venv/bin/python bench/mixed_load.py [--duration 60] [--quick] [--clients 64]

One run, on the machine's PostgreSQL (BENCH_DATABASE_URL, default
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres) and Redis
(BENCH_REDIS_URL, default redis://127.0.0.1:6379/7; that Redis database is
flushed before and after the run):

1. trains a model into a temporary MODEL_DIR, creates and migrates a fresh
   database, starts `python -m app serve --workers 2` (production settings,
   random 48-byte SECRET_KEY, BCRYPT_ROUNDS=12, fake payment provider);
2. seeds through the API: one reader with 100 posts; 8 users with 25 USD
   accounts each, every account funded with 50.00 by POST /api/pay;
3. measures an unloaded baseline: each endpoint alone, one client,
   sequential requests (30 each; 2 sign-ups, 2 CSV uploads);
4. runs closed-loop clients (each sends its next request when the previous
   one answered) for --duration seconds after a short warm-up, spread over
   --procs client processes (asyncio + httpx, keep-alive). With 64 clients:
   - 1 sign-up client (POST /api/users; bcrypt cost 12 is ~0.2 s of CPU per
     sign-up, so more would turn the run into a bcrypt benchmark),
   - 1 CSV client (POST /api/upload-csv, a generated ~4 MB file: one upload
     at a time),
   - the other 62 split evenly over GET /api/users/me, GET /api/posts,
     POST /api/transfers (random amount 0.01-20.00 between random seeded
     accounts, from one the client's user owns) and POST /api/predict
     (30 features, rows of the held-out set);
5. prints per endpoint: clients, count, req/s, p50/p99/max latency, idle p50
   and the loaded/idle p50 ratio, expected non-2xx answers, and errors.
   Expected statuses (anything else, and any transport error or timeout, is
   an error; errors must be 0):
   - GET /api/users/me, GET /api/posts, POST /api/predict: 200
   - POST /api/upload-csv: 200, with total_rows/unique_emails as generated
   - POST /api/users: 201
   - POST /api/transfers: 201, or 400 with code `insufficient_funds` (money
     drifts between accounts at random, so some run dry: that is the rule
     working, not a failure)
6. reports client and server CPU (server = gunicorn master + workers; the
   PostgreSQL backends are not counted), scans the server log for
   tracebacks, 5xx and worker timeouts, and checks the ledger afterwards
   (sum of balances = sum of payments, no negative balance, one transfer
   row per 201, one user row per 201 sign-up).

Exits 1 if any error, log problem or ledger mismatch is found.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import multiprocessing
import os
import random
import re
import resource
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import httpx
from common import (
    bench_database,
    print_table,
    process_tree_cpu_seconds,
    server_process,
    summary_ms,
)

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
PASSWORD = "bench-password-123"
SEED_USERS = 8
ACCOUNTS_PER_USER = 25
SEED_BALANCE_CENTS = 5000  # 50.00; ends in 00: the fake provider accepts it
SEED_POSTS = 100

ME = "GET /api/users/me"
POSTS = "GET /api/posts"
SIGNUP = "POST /api/users"
TRANSFER = "POST /api/transfers"
PREDICT = "POST /api/predict"
CSV_UPLOAD = "POST /api/upload-csv"
ENDPOINTS = (ME, POSTS, TRANSFER, PREDICT, SIGNUP, CSV_UPLOAD)

# Per endpoint: status -> required error code (None: any body).
EXPECTED: Dict[str, Dict[int, Optional[str]]] = {
    ME: {200: None},
    POSTS: {200: None},
    SIGNUP: {201: None},
    TRANSFER: {201: None, 400: "insufficient_funds"},
    PREDICT: {200: None},
    CSV_UPLOAD: {200: None},
}


# ------------------------------------------------------------------ seeding


@dataclass
class Seed:
    reader: Dict[str, str]
    # (headers, own account ids) per transfer user
    payers: List[Tuple[Dict[str, str], List[int]]]
    all_accounts: List[int]
    features: List[List[float]]
    csv_bytes: bytes
    csv_rows: int
    csv_unique: int


def expect(response: httpx.Response, status: int) -> Dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(
            f"seeding: {response.request.method} {response.request.url.path} -> "
            f"{response.status_code} {response.text[:300]}"
        )
    return response.json() if response.content else {}


async def sign_up_and_login(http: httpx.AsyncClient, label: str) -> Dict[str, str]:
    email = f"{label}-{uuid.uuid4().hex[:12]}@example.com"
    expect(
        await http.post("/api/users", json={"email": email, "password": PASSWORD, "name": label}),
        201,
    )
    token = expect(await http.post("/token", data={"username": email, "password": PASSWORD}), 200)
    return {"Authorization": f"Bearer {token['access_token']}"}


async def seed_data(base: str) -> Tuple[Dict[str, str], List[Tuple[Dict[str, str], List[int]]]]:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        gate = asyncio.Semaphore(16)

        async def gated(coro: Any) -> Any:
            async with gate:
                return await coro

        headers = await asyncio.gather(
            *(sign_up_and_login(http, f"seed{i}") for i in range(SEED_USERS + 1))
        )
        reader, payer_headers = headers[0], headers[1:]

        await asyncio.gather(
            *(
                gated(
                    http.post(
                        "/api/posts", json={"title": f"post {i}", "body": "x" * 400}, headers=reader
                    )
                )
                for i in range(SEED_POSTS)
            )
        )

        async def open_funded_account(owner: Dict[str, str]) -> int:
            account = expect(
                await http.post("/api/accounts", json={"currency": "USD"}, headers=owner), 201
            )
            expect(
                await http.post(
                    "/api/pay",
                    json={"amount": SEED_BALANCE_CENTS, "account_id": account["id"]},
                    headers={**owner, "Idempotency-Key": uuid.uuid4().hex},
                ),
                200,
            )
            return int(account["id"])

        payers = []
        for owner in payer_headers:
            ids = await asyncio.gather(
                *(gated(open_funded_account(owner)) for _ in range(ACCOUNTS_PER_USER))
            )
            payers.append((owner, list(ids)))
        return reader, payers


def make_csv(target_bytes: int) -> Tuple[bytes, int, int]:
    """A CSV of about `target_bytes`: id,name,email,age,score,balance. Some
    emails are empty (dropped), many repeat in other case/spacing."""
    rng = random.Random(7)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "name", "email", "age", "score", "balance"])
    kept, emails = 0, set()
    i = 0
    while out.tell() < target_bytes:
        i += 1
        if i % 50 == 0:
            email = ""
        else:
            local = f"user{rng.randrange(max(1, target_bytes // 200))}"
            email = f" {local}@Example.COM " if i % 7 == 0 else f"{local}@example.com"
        if email.strip():
            kept += 1
            emails.add(email.strip().lower())
        writer.writerow(
            [
                i,
                f"Name {i}",
                email,
                rng.randint(18, 90),
                f"{rng.random() * 100:.3f}",
                f"{rng.random() * 10000:.2f}",
            ]
        )
    return out.getvalue().encode(), kept, len(emails)


def held_out_rows() -> List[List[float]]:
    from app.ml.training import load_data

    _, x_test, _, _, _ = load_data(42)
    return [[float(v) for v in row] for row in x_test]


# ------------------------------------------------------------------ load


@dataclass
class Record:
    latencies: List[float] = field(default_factory=list)
    # Measured answers by label ("201", "400 insufficient_funds", "transport ReadTimeout").
    outcomes: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    warmup_errors: int = 0
    warmup_outcomes: Counter = field(default_factory=Counter)
    samples: List[str] = field(default_factory=list)


def classify(endpoint: str, response: httpx.Response, seed: Seed) -> Tuple[str, bool, str]:
    """(outcome label, expected?, detail for the error sample)."""
    status = response.status_code
    code = None
    if status >= 400:
        try:
            body = response.json()
            code = body.get("code") if isinstance(body, dict) else None
        except ValueError:
            pass
    label = f"{status} {code}" if code else str(status)
    allowed = EXPECTED[endpoint]
    if status not in allowed or (allowed[status] is not None and allowed[status] != code):
        return label, False, response.text[:200]
    if endpoint == CSV_UPLOAD:
        body = response.json()
        if (body.get("total_rows"), body.get("unique_emails")) != (seed.csv_rows, seed.csv_unique):
            return "200 wrong summary", False, response.text[:200]
    return label, True, ""


def build_request(
    endpoint: str, index: int, seed: Seed, rng: random.Random
) -> Tuple[str, str, Dict[str, Any]]:
    if endpoint == ME:
        return "GET", "/api/users/me", {"headers": seed.reader}
    if endpoint == POSTS:
        return "GET", "/api/posts", {"headers": seed.reader, "params": {"limit": 20}}
    if endpoint == PREDICT:
        row = seed.features[rng.randrange(len(seed.features))]
        return "POST", "/api/predict", {"headers": seed.reader, "json": {"features": row}}
    if endpoint == SIGNUP:
        email = f"load-{uuid.uuid4().hex}@example.com"
        body = {"email": email, "password": PASSWORD, "name": "Load"}
        return "POST", "/api/users", {"json": body}
    if endpoint == TRANSFER:
        owner, own = seed.payers[index % len(seed.payers)]
        source = rng.choice(own)
        target = rng.choice(seed.all_accounts)
        while target == source:
            target = rng.choice(seed.all_accounts)
        cents = rng.randint(1, 2000)
        body = {
            "from_account_id": source,
            "to_account_id": target,
            "amount": f"{cents // 100}.{cents % 100:02d}",
        }
        return "POST", "/api/transfers", {"headers": owner, "json": body}
    files = {"file": ("bench.csv", seed.csv_bytes, "text/csv")}
    return "POST", "/api/upload-csv", {"headers": seed.reader, "files": files}


async def client_loop(
    http: httpx.AsyncClient,
    endpoint: str,
    index: int,
    seed: Seed,
    measure_from: float,
    deadline: float,
    record: Record,
) -> None:
    rng = random.Random(index)
    while time.monotonic() < deadline:
        method, url, kwargs = build_request(endpoint, index, seed, rng)
        started = time.monotonic()
        try:
            response = await http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            outcome, ok, detail = f"transport {type(error).__name__}", False, str(error)[:200]
        else:
            outcome, ok, detail = classify(endpoint, response, seed)
        if not ok and len(record.samples) < 5:
            record.samples.append(f"{outcome}: {detail}")
        if started < measure_from:  # warm-up: not measured, but errors still count
            record.warmup_errors += 0 if ok else 1
            record.warmup_outcomes[outcome] += 1
            continue
        record.latencies.append(time.monotonic() - started)
        (record.outcomes if ok else record.errors)[outcome] += 1


async def run_shard_async(
    base: str, roles: List[Tuple[str, int]], seed: Seed, warmup: float, duration: float
) -> Dict[str, Record]:
    """Each client gets its own single-connection AsyncClient: one shared
    client with N connections costs ~4x more CPU per request (httpcore's pool
    bookkeeping), which would make the load generator the bottleneck."""
    records = {endpoint: Record() for endpoint in ENDPOINTS}
    now = time.monotonic()
    measure_from, deadline = now + warmup, now + warmup + duration

    async def one_client(endpoint: str, index: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=base, limits=limits, timeout=httpx.Timeout(30.0)
        ) as http:
            await client_loop(
                http, endpoint, index, seed, measure_from, deadline, records[endpoint]
            )

    await asyncio.gather(*(one_client(endpoint, index) for endpoint, index in roles))
    return records


BASELINE_REQUESTS = {ME: 30, POSTS: 30, TRANSFER: 30, PREDICT: 30, SIGNUP: 2, CSV_UPLOAD: 2}


async def run_baseline(base: str, seed: Seed) -> Dict[str, Record]:
    """Each endpoint alone, one client, sequential requests: the unloaded
    latency the loaded figures are compared with."""
    records = {endpoint: Record() for endpoint in ENDPOINTS}
    rng = random.Random(0)
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30.0)) as http:
        for endpoint in ENDPOINTS:
            record = records[endpoint]
            for _ in range(BASELINE_REQUESTS[endpoint]):
                method, url, kwargs = build_request(endpoint, 0, seed, rng)
                started = time.monotonic()
                try:
                    response = await http.request(method, url, **kwargs)
                except httpx.HTTPError as error:
                    outcome, ok = f"transport {type(error).__name__}", False
                    record.samples.append(f"baseline {outcome}: {error}")
                else:
                    outcome, ok, detail = classify(endpoint, response, seed)
                    if not ok:
                        record.samples.append(f"baseline {outcome}: {detail}")
                record.latencies.append(time.monotonic() - started)
                (record.outcomes if ok else record.errors)[outcome] += 1
    return records


def run_shard(args: Tuple[str, List[Tuple[str, int]], Seed, float, float]) -> Dict[str, Record]:
    return asyncio.run(run_shard_async(*args))


def assign_roles(clients: int) -> List[Tuple[str, int]]:
    """(endpoint, client index) for every client: 1 sign-up, 1 CSV, the rest
    split evenly over reads, transfers and predictions."""
    if clients < 6:
        raise SystemExit("--clients must be at least 6")
    rest = clients - 2
    share = rest // 4
    counts = {
        ME: share,
        POSTS: share,
        TRANSFER: share,
        PREDICT: rest - 3 * share,
        SIGNUP: 1,
        CSV_UPLOAD: 1,
    }
    roles = []
    for endpoint, count in counts.items():
        roles += [(endpoint, i) for i in range(count)]
    return roles


# ------------------------------------------------------------------ checks


async def ledger_check(url: str, transfers_201: int, signups_201: int) -> List[str]:
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conn = await asyncpg.connect(
        user=parsed.username or "postgres",
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    try:
        balances = await conn.fetchval("SELECT coalesce(sum(balance), 0) FROM accounts")
        paid = await conn.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM payments WHERE status = 'succeeded'"
        )
        negative = await conn.fetchval("SELECT count(*) FROM accounts WHERE balance < 0")
        drift = await conn.fetchval(
            "SELECT count(*) FROM accounts a WHERE a.balance <> "
            "(SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e WHERE e.account_id = a.id)"
        )
        transfers = await conn.fetchval("SELECT count(*) FROM transfers")
        users = await conn.fetchval("SELECT count(*) FROM users")
    finally:
        await conn.close()
    problems = []
    if balances != paid:
        problems.append(f"sum of balances {balances} != sum of payments {paid}")
    if negative:
        problems.append(f"{negative} accounts with a negative balance")
    if drift:
        problems.append(f"{drift} accounts whose balance differs from their entries")
    if transfers != transfers_201:
        problems.append(f"{transfers} transfer rows, {transfers_201} answered 201")
    if users != signups_201 + SEED_USERS + 1:
        problems.append(f"{users} users, expected {signups_201 + SEED_USERS + 1}")
    print(
        f"ledger: balances {balances} = payments {paid}; {transfers} transfers; "
        f"negative {negative}; entry drift {drift}; users {users}"
    )
    return problems


LOG_PROBLEM = re.compile(
    r"Traceback|WORKER TIMEOUT|Worker .* was sent|\"status\": 5\d\d|\" 5\d\d |\"level\": \"ERROR\"|"
    r"\bERROR\b|CRITICAL"
)


def scan_log(log: Path) -> List[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if LOG_PROBLEM.search(line)]


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def describe_expected(endpoint: str) -> List[str]:
    return [
        f"{status} {code}" if code else str(status)
        for status, code in sorted(EXPECTED[endpoint].items())
    ]


_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? ([0-9.e+-]+)$")


def parse_metrics(text: str) -> List[Tuple[str, Dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def sample_pool(base: str, peak: Dict[str, float]) -> None:
    """Keep the highest pool gauges seen (the worker that answers the scrape)."""
    try:
        text = httpx.get(f"{base}/metrics", timeout=5).text
    except httpx.HTTPError:
        peak["scrape failures"] = peak.get("scrape failures", 0) + 1
        return
    for name, _, value in parse_metrics(text):
        if name in ("keel_db_pool_checked_out", "keel_db_pool_overflow"):
            key = name.replace("keel_db_pool_", "")
            peak[key] = max(peak.get(key, 0.0), value)


def server_side_counts(text: str) -> Dict[str, float]:
    counts: Dict[str, float] = {}
    for name, labels, value in parse_metrics(text):
        if name == "keel_http_requests_total" and labels.get("status", "").startswith("5"):
            counts["5xx answers"] = counts.get("5xx answers", 0) + value
        elif name == "keel_http_requests_total":
            counts["requests"] = counts.get("requests", 0) + value
        elif name == "keel_ledger_transaction_retries_total":
            counts["ledger retries"] = counts.get("ledger retries", 0) + value
        elif name == "keel_prediction_shed_total" or name.startswith("keel_prediction_errors"):
            counts[name] = counts.get(name, 0) + value
    counts.setdefault("5xx answers", 0)
    return counts


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--quick", action="store_true", help="10 s run (overrides --duration)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--csv-mb", type=float, default=4.0)
    args = parser.parse_args()
    duration = 10.0 if args.quick else args.duration
    warmup = min(args.warmup, 1.0) if args.quick else args.warmup

    from app.ml.training import train_model

    work = Path(tempfile.mkdtemp(prefix="keel-bench-mixed-"))
    print("training model ...", flush=True)
    version = train_model(work / "models")["version"]
    features = held_out_rows()
    assert len(features[0]) == 30, len(features[0])
    csv_bytes, csv_rows, csv_unique = make_csv(int(args.csv_mb * 1024 * 1024))

    flush_redis(REDIS_URL)
    failures: List[str] = []
    with bench_database() as url:
        env = {
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "MODEL_DIR": str(work / "models"),
            "ENVIRONMENT": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "BCRYPT_ROUNDS": "12",
            "LOGIN_MAX_FAILURES": "1000000",
            "ACCESS_TOKEN_MINUTES": "120",
            "PAYMENT_PROVIDER": "fake",
            "LOG_LEVEL": "WARNING",
        }
        argv = [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--workers",
            str(args.workers),
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ]
        with server_process(env, argv=argv, log=work / "server.log") as srv:
            print(
                f"server: keel serve, {args.workers} workers, {srv.base}; model {version}; "
                f"log {srv.log}",
                flush=True,
            )
            print("seeding ...", flush=True)
            reader, payers = asyncio.run(seed_data(srv.base))
            seed = Seed(
                reader=reader,
                payers=payers,
                all_accounts=[a for _, ids in payers for a in ids],
                features=features,
                csv_bytes=csv_bytes,
                csv_rows=csv_rows,
                csv_unique=csv_unique,
            )
            print("unloaded baseline: one client, each endpoint alone ...", flush=True)
            baseline = asyncio.run(run_baseline(srv.base, seed))
            roles = assign_roles(args.clients)
            shards: List[List[Tuple[str, int]]] = [[] for _ in range(max(1, args.procs))]
            for position, role in enumerate(roles):
                shards[position % len(shards)].append(role)
            print(
                f"load: {args.clients} clients in {len(shards)} processes, "
                f"{warmup:.0f} s warm-up + {duration:.0f} s ...",
                flush=True,
            )

            server_cpu0 = process_tree_cpu_seconds(srv.proc.pid)
            client_cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall0 = time.monotonic()
            pool_peak: Dict[str, float] = {}
            context = multiprocessing.get_context("fork")
            with context.Pool(len(shards)) as pool:
                pending = pool.map_async(
                    run_shard, [(srv.base, shard, seed, warmup, duration) for shard in shards]
                )
                while not pending.ready():
                    sample_pool(srv.base, pool_peak)
                    pending.wait(1.0)
                results = pending.get()
            wall = time.monotonic() - wall0
            client_cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            server_cpu = process_tree_cpu_seconds(srv.proc.pid) - server_cpu0
            client_cpu = (client_cpu1.ru_utime - client_cpu0.ru_utime) + (
                client_cpu1.ru_stime - client_cpu0.ru_stime
            )
            server_counts = server_side_counts(httpx.get(f"{srv.base}/metrics", timeout=10).text)
            # Scanned before shutdown: gunicorn logs its workers' SIGTERM at ERROR level.
            log_lines = scan_log(srv.log)

        merged = {endpoint: Record() for endpoint in ENDPOINTS}
        for shard_result in results:
            for endpoint, record in shard_result.items():
                target = merged[endpoint]
                target.latencies += record.latencies
                target.outcomes.update(record.outcomes)
                target.errors.update(record.errors)
                target.warmup_errors += record.warmup_errors
                target.warmup_outcomes.update(record.warmup_outcomes)
                target.samples += record.samples
        for endpoint, record in baseline.items():
            merged[endpoint].samples += record.samples
        clients_per = Counter(endpoint for endpoint, _ in roles)

        rows = []
        total = errors = 0
        for endpoint in ENDPOINTS:
            record = merged[endpoint]
            stats = summary_ms(record.latencies)
            expected_non2xx = {
                label: n for label, n in sorted(record.outcomes.items()) if int(label[:3]) >= 300
            }
            n_errors = sum(record.errors.values()) + record.warmup_errors
            idle = summary_ms(baseline[endpoint].latencies)
            n_errors += sum(baseline[endpoint].errors.values())
            total += len(record.latencies)
            errors += n_errors
            rows.append(
                {
                    "endpoint": endpoint,
                    "clients": clients_per[endpoint],
                    "count": len(record.latencies),
                    "req/s": len(record.latencies) / duration,
                    "p50 ms": stats["p50"],
                    "p99 ms": stats["p99"],
                    "idle p50 ms": idle["p50"],
                    "p50 x idle": stats["p50"] / idle["p50"],
                    "max ms": max(record.latencies) * 1000 if record.latencies else float("nan"),
                    "expected": " or ".join(describe_expected(endpoint)),
                    "expected non-2xx seen": ", ".join(
                        f"{k}: {v}" for k, v in expected_non2xx.items()
                    )
                    or "-",
                    "errors": n_errors,
                }
            )
        print_table(
            f"mixed load: {args.clients} clients, {duration:.0f} s, keel serve "
            f"({args.workers} gunicorn/uvicorn workers)",
            rows,
        )
        cores = os.cpu_count() or 1
        print(
            "idle p50: the same endpoint alone, one client, sequential requests, before the load; "
            "p50 x idle = loaded p50 / idle p50 (64 clients on 2 cores queue, so >> 1 is expected)"
        )
        print(f"\ntotal: {total} requests, {total / duration:.0f} req/s, errors {errors}")
        print(
            f"CPU over {wall:.1f} s wall on {cores} cores: server (gunicorn tree) "
            f"{server_cpu:.1f} s = {server_cpu / wall:.2f} cores; load generator "
            f"{client_cpu:.1f} s = {client_cpu / wall:.2f} cores "
            f"({client_cpu / max(total, 1) * 1e6:.0f} us/request); the rest is PostgreSQL, "
            f"Redis and other load on the machine"
        )
        csv_mb = len(csv_bytes) / 1024 / 1024
        print(f"CSV file: {csv_mb:.1f} MB, {csv_rows} kept rows, {csv_unique} unique emails")
        if pool_peak:
            print(
                "DB pool peak seen in 1 s samples of one worker: "
                + ", ".join(f"{k} {v:.0f}" for k, v in sorted(pool_peak.items()))
            )
        print(
            "server-side (/metrics, whole run incl. seeding): "
            + ", ".join(f"{k} {v:.0f}" for k, v in sorted(server_counts.items()))
        )
        for endpoint in ENDPOINTS:
            for label, n in merged[endpoint].errors.items():
                print(f"  ERROR {endpoint}: {label} x{n}")
            for sample in merged[endpoint].samples:
                print(f"  error sample {endpoint}: {sample}")
        if errors:
            failures.append(f"{errors} errors")
        if server_counts.get("5xx answers", 0):
            failures.append(f"{server_counts['5xx answers']:.0f} 5xx answers in /metrics")

        # Baseline and warm-up requests wrote too.
        signups, transfers = (
            merged[name].outcomes["201"]
            + merged[name].warmup_outcomes["201"]
            + baseline[name].outcomes["201"]
            for name in (SIGNUP, TRANSFER)
        )
        problems = asyncio.run(ledger_check(url, transfers, signups))
        failures += problems

        print(f"server log: {len(log_lines)} problem lines (tracebacks, 5xx, errors, timeouts)")
        for line in log_lines[:10]:
            print(f"  {line[:300]}")
        if log_lines:
            failures.append(f"{len(log_lines)} problem lines in the server log {srv.log}")
    flush_redis(REDIS_URL)

    if failures:
        print("\nFAILED: " + "; ".join(failures))
        return 1
    print("\nOK: zero errors, ledger consistent, clean server log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
