"""Shared benchmark plumbing: a private database, a real server process, wrk.

Benchmarks load only 127.0.0.1 and are bounded in time. Figures are reported
next to a baseline measured in the same run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(latencies_s: Sequence[float]) -> Dict[str, float]:
    ms = [x * 1000 for x in latencies_s]
    return {
        "n": len(ms),
        "p50": percentile(ms, 0.50),
        "p99": percentile(ms, 0.99),
        "mean": statistics.fmean(ms) if ms else float("nan"),
    }


# The event loop the app ships with (EVENT_LOOP, app/core/config.py); baselines use it too.
EVENT_LOOP = os.environ.get("EVENT_LOOP", "asyncio")


def uvicorn_argv(port: int, *extra: str) -> List[str]:
    """The command that runs one uvicorn process of the API on 127.0.0.1:port."""
    from app.dev.launcher import uvicorn_command

    return [*uvicorn_command(port, EVENT_LOOP), *extra]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin_execute(server_url: str, statement: str) -> None:
    """Run one statement (CREATE/DROP DATABASE) on a server's maintenance db."""
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)

    async def run() -> None:
        conn = await asyncpg.connect(
            user=url.username or "postgres",
            password=url.password,
            host=url.host or url.query.get("host"),
            port=url.port,
            database=url.database or "postgres",
        )
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _admin(statement: str) -> None:
    admin_execute(ADMIN_URL, statement)


@contextmanager
def bench_database() -> Iterator[str]:
    """A fresh, migrated database on the machine's PostgreSQL; dropped after."""
    from sqlalchemy.engine import make_url

    from app.core.migrations import upgrade

    name = f"keel_bench_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Server:
    """A running API process: its base URL, the process, and its log file."""

    base: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def server_process(
    env: Dict[str, str],
    *,
    workers: int = 1,
    argv: Optional[List[str]] = None,
    log: Optional[Path] = None,
) -> Iterator[Server]:
    """Run the API with `env` until healthy; yields a Server. `argv` replaces
    the default uvicorn command ("{port}" in it is replaced by a free port);
    stdout/stderr go to `log` (a temporary file by default)."""
    port = free_port()
    command = argv or uvicorn_argv(port, "--workers", str(workers), "--no-access-log")
    command = [part.replace("{port}", str(port)) for part in command]
    if log is None:
        with tempfile.NamedTemporaryFile(prefix="keel-bench-", suffix=".log", delete=False) as f:
            log = Path(f.name)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited; log: {log}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server not healthy; log: {log}")
        time.sleep(0.1)
    try:
        yield Server(base=base, proc=proc, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def server(
    env: Dict[str, str], *, workers: int = 1, argv: Optional[List[str]] = None
) -> Iterator[str]:
    """Run the API (uvicorn, N workers) with `env`; yields its base URL."""
    with server_process(env, workers=workers, argv=argv) as running:
        yield running.base


def _children(pid: int) -> List[int]:
    found: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found += [int(child) for child in text.split()]
    return found


def process_tree_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds used so far by `pid` and its live descendants
    (Linux /proc; a gunicorn master and its workers, for example)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        pending += _children(current)
    return total


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
    path = shutil.which("wrk")
    if not path:
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
        path = shutil.which("wrk")
    assert path, "wrk could not be installed"
    return path


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    return float(match.group(1)) * _UNIT[match.group(2)]


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: int = 10,
    threads: int = 2,
    headers: Optional[Dict[str, str]] = None,
    script: Optional[str] = None,
) -> Dict[str, float]:
    """wrk with latency percentiles; returns rps, p50/p99 (ms) and error counts."""
    argv = [
        ensure_wrk(),
        "-t",
        str(min(threads, connections)),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script:
        argv += ["-s", script]
    out = subprocess.run(argv + [url], check=True, capture_output=True, text=True).stdout
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "non_2xx": 0.0,
        "socket_errors": 0.0,
    }
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        result["non_2xx"] = float(non2xx.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        result["socket_errors"] = float(sum(int(g) for g in errors.groups()))
    return result


def print_table(title: str, rows: List[Dict[str, object]]) -> None:
    print(f"\n## {title}")
    if not rows:
        return
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()]
        print("| " + " | ".join(cells) + " |")
