"""Transfers/s through HTTP vs pgbench running the same transfer in SQL.

    .venv/bin/python bench/transfers.py [--seconds 8] [--keep-going]

One run, on the machine's PostgreSQL (BENCH_DATABASE_URL, default
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres):

1. creates a fresh database, migrates it, seeds 1,000 funded accounts (money
   enters as succeeded payments with their ledger credits, as in the app) and
   a mirror table set for pgbench;
2. starts the real server (uvicorn, one worker, production settings; pool
   20+10 connections so 32 clients do not churn overflow connections;
   DB_POOL_SIZE / DB_MAX_OVERFLOW / DB_POOL_PRE_PING in the environment
   override);
3. for "1,000 accounts" and "10 hot accounts": pgbench with a two-row-lock
   transfer script (lock both rows in id order, update both balances, insert
   the transfer and two entries) at 32 clients, then POST /api/transfers at 32
   concurrent keep-alive connections; prints tps and the ratio (goal >= 0.2x),
   latency, and the server process CPU per request (robust to other load on
   the machine, unlike tps);
4. latency at 8 clients on 1,000 accounts (goal p99 <= 50 ms);
5. stops the server and checks the ledger invariants (sum of balances equals
   sum of payments, no negative balance, every balance equals the sum of its
   entries, every transfer has a debit and a credit, one transfer per 201,
   no 5xx): exits 1 loudly if any is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
N_ACCOUNTS = 1_000
HOT_ACCOUNTS = 10
CLIENTS = 32
LATENCY_CLIENTS = 8
START_BALANCE = "1000000.00"

PGBENCH_SCRIPT = """
\\set a random(1, :naccounts)
\\set b 1 + (:a + random(0, :naccounts - 2)) % :naccounts
\\set cents random(1, 1000)
BEGIN;
SELECT id, balance FROM pgb_accounts WHERE id IN (:a, :b) ORDER BY id FOR UPDATE;
WITH debit AS (
  UPDATE pgb_accounts SET balance = balance - CAST(:cents AS numeric) / 100
  WHERE id = :a RETURNING balance
), credit AS (
  UPDATE pgb_accounts SET balance = balance + CAST(:cents AS numeric) / 100
  WHERE id = :b RETURNING balance
), moved AS (
  INSERT INTO pgb_transfers (from_account_id, to_account_id, amount)
  VALUES (:a, :b, CAST(:cents AS numeric) / 100) RETURNING id
)
INSERT INTO pgb_entries (account_id, transfer_id, amount, balance_after)
SELECT CAST(:a AS integer), moved.id, -CAST(:cents AS numeric) / 100, debit.balance
FROM moved, debit
UNION ALL
SELECT CAST(:b AS integer), moved.id, CAST(:cents AS numeric) / 100, credit.balance
FROM moved, credit;
COMMIT;
"""

PGBENCH_SCHEMA = """
CREATE TABLE pgb_accounts (id integer PRIMARY KEY,
    balance numeric(18,2) NOT NULL CHECK (balance >= 0));
CREATE TABLE pgb_transfers (id serial PRIMARY KEY,
    from_account_id integer NOT NULL REFERENCES pgb_accounts(id),
    to_account_id integer NOT NULL REFERENCES pgb_accounts(id),
    amount numeric(18,2) NOT NULL CHECK (amount > 0),
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE pgb_entries (id serial PRIMARY KEY,
    account_id integer NOT NULL REFERENCES pgb_accounts(id),
    transfer_id integer NOT NULL REFERENCES pgb_transfers(id),
    amount numeric(18,2) NOT NULL,
    balance_after numeric(18,2) NOT NULL CHECK (balance_after >= 0),
    created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON pgb_entries (account_id, id);
INSERT INTO pgb_accounts SELECT g, {balance} FROM generate_series(1, {n}) g;
"""


# ------------------------------------------------------------------ database


def _pg_params(url: str) -> Dict[str, Any]:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return {
        "user": parsed.username or "postgres",
        "password": parsed.password,
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "database": parsed.database or "postgres",
    }


async def _execute(url: str, *statements: str) -> List[Any]:
    import asyncpg

    conn = await asyncpg.connect(**_pg_params(url))
    try:
        results = []
        for statement in statements:
            if statement.lstrip().upper().startswith("SELECT") or "RETURNING" in statement:
                results.append(await conn.fetch(statement))
            else:  # may hold several commands
                results.append(await conn.execute(statement))
        return results
    finally:
        await conn.close()


def execute(url: str, *statements: str) -> List[Any]:
    return asyncio.run(_execute(url, *statements))


def create_database() -> str:
    from sqlalchemy.engine import make_url

    from app.core.migrations import upgrade

    name = f"keel_bench_transfers_{uuid.uuid4().hex[:8]}"
    execute(ADMIN_URL, f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def drop_database(url: str) -> None:
    name = _pg_params(url)["database"]
    execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(url: str) -> int:
    """One user owning N funded accounts; money enters as payments. Returns the user id."""
    (rows,) = execute(
        url,
        "INSERT INTO users (email, name, password_hash) "
        "VALUES ('bench@example.com', 'bench', 'x') RETURNING id",
    )
    user_id = rows[0]["id"]
    execute(
        url,
        f"INSERT INTO accounts (owner_id, currency, balance) "
        f"SELECT {user_id}, 'USD', {START_BALANCE} FROM generate_series(1, {N_ACCOUNTS})",
        f"INSERT INTO payments (user_id, account_id, amount, currency, status) "
        f"SELECT {user_id}, id, balance, 'USD', 'succeeded' FROM accounts ORDER BY id",
        "INSERT INTO ledger_entries (account_id, payment_id, amount, balance_after) "
        "SELECT account_id, id, amount, amount FROM payments ORDER BY id",
        PGBENCH_SCHEMA.format(balance=START_BALANCE, n=N_ACCOUNTS),
        "VACUUM ANALYZE",
    )
    return int(user_id)


def check_invariants(url: str, created: int) -> Tuple[bool, List[str]]:
    (
        (totals,),
        (negative,),
        (drift,),
        (unbalanced,),
        (transfers,),
    ) = [
        rows
        for rows in execute(
            url,
            "SELECT (SELECT sum(balance) FROM accounts) AS balances, "
            "(SELECT sum(amount) FROM payments WHERE status = 'succeeded') AS payments",
            "SELECT count(*) AS n FROM accounts WHERE balance < 0",
            "SELECT count(*) AS n FROM accounts a LEFT JOIN (SELECT account_id, sum(amount) s "
            "FROM ledger_entries GROUP BY account_id) e ON e.account_id = a.id "
            "WHERE a.balance <> COALESCE(e.s, 0)",
            "SELECT count(*) AS n FROM (SELECT t.id FROM transfers t JOIN ledger_entries e "
            "ON e.transfer_id = t.id GROUP BY t.id HAVING count(*) <> 2 OR sum(e.amount) <> 0) x",
            "SELECT count(*) AS n FROM transfers",
        )
    ]
    checks = [
        (
            totals["balances"] == totals["payments"],
            f"sum of balances {totals['balances']} == sum of payments {totals['payments']}",
        ),
        (negative["n"] == 0, f"accounts with a negative balance: {negative['n']}"),
        (drift["n"] == 0, f"accounts whose balance != sum of their entries: {drift['n']}"),
        (
            unbalanced["n"] == 0,
            f"transfers without exactly a debit and a credit: {unbalanced['n']}",
        ),
        (
            transfers["n"] == created,
            f"transfer rows {transfers['n']} == 201 responses {created}",
        ),
    ]
    return all(ok for ok, _ in checks), [("ok   " if ok else "FAIL ") + text for ok, text in checks]


# ------------------------------------------------------------------ pgbench


def pgbench_binary() -> str:
    for candidate in (shutil.which("pgbench"), "/usr/lib/postgresql/15/bin/pgbench"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise SystemExit("pgbench not found (apt-get install postgresql-client)")


def run_pgbench(url: str, *, accounts: int, clients: int, seconds: int) -> float:
    params = _pg_params(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT)
    command = [
        pgbench_binary(),
        "-h", params["host"], "-p", str(params["port"]), "-U", params["user"],
        "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds),
        "-D", f"naccounts={accounts}", "-f", script.name, params["database"],
    ]  # fmt: skip
    env = {**os.environ, **({"PGPASSWORD": params["password"]} if params["password"] else {})}
    output = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    os.unlink(script.name)
    match = re.search(r"tps = ([\d.]+) \(without initial", output.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", output.stdout)
    if output.returncode != 0 or not match or (failed and int(failed.group(1))):
        raise SystemExit(f"pgbench failed:\n{output.stdout}\n{output.stderr}")
    return float(match.group(1))


# ------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(database_url: str, secret_key: str) -> Tuple[subprocess.Popen, int, Any]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1"),
        # Production refuses the fake provider, which funds the accounts here;
        # development with JSON logs off is otherwise the same server.
        "ENVIRONMENT": "development",
        "SECRET_KEY": secret_key,
        "PAYMENT_PROVIDER": "fake",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_SIZE": os.environ.get("DB_POOL_SIZE", "20"),
        "DB_MAX_OVERFLOW": os.environ.get("DB_MAX_OVERFLOW", "10"),
    }
    log = tempfile.NamedTemporaryFile(prefix="keel-bench-transfers-", suffix=".log", delete=False)
    command = [
        sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited; log: {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return proc, port, log
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"server did not start; log: {log.name}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ HTTP load


class Load:
    """Keep-alive HTTP/1.1 connections posting random transfers; a small raw
    client so the load generator costs little CPU next to the server."""

    def __init__(
        self,
        port: int,
        token: str,
        account_ids: Sequence[int],
        seed: int,
        request: Optional[Callable[[], bytes]] = None,
    ) -> None:
        self.port = port
        self.make_request = request or self._transfer_request
        self.token = token
        self.account_ids = list(account_ids)
        self.rng = random.Random(seed)
        self.statuses: Counter = Counter()
        self.latencies: List[float] = []
        self.created = 0
        self.completed = 0

    def _transfer_request(self) -> bytes:
        source, target = self.rng.sample(self.account_ids, 2)
        amount = f"{self.rng.randint(1, 1000) / 100:.2f}"
        body = json.dumps(
            {"from_account_id": source, "to_account_id": target, "amount": amount}
        ).encode()
        head = (
            "POST /api/transfers HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def _connection(self, stop_at: float, record_after: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                writer.write(self.make_request())
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                elapsed = time.perf_counter() - started
                self.completed += 1
                if status == 201:
                    self.created += 1  # counted during warm-up too: every row must match
                if started >= record_after:
                    self.statuses[status] += 1
                    self.latencies.append(elapsed)
        finally:
            writer.close()

    async def run(
        self, clients: int, seconds: float, warmup: float, server_pid: int = 0
    ) -> Dict[str, float]:
        cpu_before = process_cpu_seconds(server_pid)
        now = time.perf_counter()
        record_after, stop_at = now + warmup, now + warmup + seconds
        await asyncio.gather(*(self._connection(stop_at, record_after) for _ in range(clients)))
        ordered = sorted(self.latencies)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0

        cpu = process_cpu_seconds(server_pid) - cpu_before
        return {
            "cpu_ms": cpu / max(1, self.completed) * 1000,
            "tps": len(self.latencies) / seconds,
            "p50": pct(0.50),
            "p99": pct(0.99),
        }


def latency(result: Dict[str, float]) -> str:
    return f"{result['p50']:>8.1f}{result['p99']:>8.1f}{result['cpu_ms']:>9.2f}"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc), 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mint_token(secret_key: str, user_id: int) -> str:
    from app.core.config import Settings
    from app.core.security import ACCESS, create_token

    settings = Settings(secret_key=secret_key, environment="production")
    return create_token(str(user_id), ACCESS, timedelta(hours=1), settings=settings)


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per case")
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()

    url = create_database()
    proc = None
    failures: List[str] = []
    created = 0
    statuses: Counter = Counter()
    try:
        user_id = seed(url)
        secret_key = secrets.token_urlsafe(48)
        token = mint_token(secret_key, user_id)
        (rows,) = execute(url, "SELECT id FROM accounts ORDER BY id")
        account_ids = [r["id"] for r in rows]
        proc, port, log = start_server(url, secret_key)
        print(f"database {_pg_params(url)['database']}, server log {log.name}")
        header = ("case", "pgbench tps", "HTTP tps", "ratio", "p50 ms", "p99 ms", "CPU ms/req")
        print("{:<28}{:>12}{:>10}{:>8}{:>8}{:>8}{:>11}".format(*header))
        for label, ids in (
            (f"{N_ACCOUNTS} accounts, {CLIENTS} clients", account_ids),
            (f"{HOT_ACCOUNTS} hot accounts, {CLIENTS} clients", account_ids[:HOT_ACCOUNTS]),
        ):
            baseline = run_pgbench(url, accounts=len(ids), clients=CLIENTS, seconds=args.seconds)
            load = Load(port, token, ids, seed=len(ids))
            result = asyncio.run(load.run(CLIENTS, args.seconds, args.warmup, proc.pid))
            created += load.created
            statuses.update(load.statuses)
            ratio = result["tps"] / baseline
            print(
                f"{label:<28}{baseline:>12.0f}{result['tps']:>10.0f}{ratio:>7.2f}x"
                + latency(result)
            )
            if ratio < 0.2:
                print(f"  below goal: ratio {ratio:.2f}x < 0.2x")
        load = Load(port, token, account_ids, seed=8)
        result = asyncio.run(load.run(LATENCY_CLIENTS, args.seconds, args.warmup, proc.pid))
        created += load.created
        statuses.update(load.statuses)
        label = f"{N_ACCOUNTS} accounts, {LATENCY_CLIENTS} clients"
        print(f"{label:<28}{'':>12}{result['tps']:>10.0f}{'':>8}" + latency(result))
        p99_goal = "" if result["p99"] <= 50 else "  BELOW GOAL"
        print(f"p99 at {LATENCY_CLIENTS} clients: {result['p99']:.1f} ms (goal <= 50 ms){p99_goal}")

        # Reference: the cheapest authenticated endpoint (token check + one
        # SELECT) on the same server, the ceiling any /api route can reach.
        me = (
            "GET /api/users/me HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        )
        floor = asyncio.run(
            Load(port, token, account_ids, 0, request=me.encode).run(
                CLIENTS, args.seconds, 1.0, proc.pid
            )
        )
        label = f"GET /api/users/me, {CLIENTS} cl."
        print(f"{label:<28}{'':>12}{floor['tps']:>10.0f}{'':>8}" + latency(floor))
        stop_server(proc)
        proc = None

        print(f"HTTP statuses (measured windows): {dict(statuses)}")
        if any(status >= 500 for status in statuses):
            failures.append("5xx responses under load")
        ok, lines = check_invariants(url, created)
        print("invariants after load:")
        for line in lines:
            print("  " + line)
        if not ok:
            failures.append("ledger invariants broken")
    finally:
        if proc is not None:
            stop_server(proc)
        drop_database(url)
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
