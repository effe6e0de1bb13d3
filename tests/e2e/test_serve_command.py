"""`keel serve`: stock gunicorn with uvicorn workers, in the same process; the
app preloaded once, workers forked from it (WEB_CONCURRENCY of them); a dead
worker replaced; metrics from every worker; SIGTERM lets the requests in
flight finish, then stops everything cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

import httpx

from app.cli import memory_backed_dir
from app.core.config import REPO_ROOT
from tests.e2e.conftest import free_port, wait_until, wait_until_healthy


def _children(pid: int) -> List[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _metrics_dir(workers: List[int]) -> Optional[Path]:
    """Where the workers' multiprocess metrics files are (mapped into them)."""
    for pid in workers:
        for word in Path(f"/proc/{pid}/maps").read_text().split():
            if "keel-metrics-" in word and word.endswith(".db"):
                return Path(word).parent
    return None


def _open_files(pid: int) -> List[str]:
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.append(os.readlink(fd))
        except FileNotFoundError:  # closed meanwhile
            continue
    return links


def _start_in_flight_sign_up(port: int, email: str) -> Tuple[socket.socket, bytes]:
    """A sign-up whose body is held back until the server's app asks for it:
    with `Expect: 100-continue`, uvicorn answers `100 Continue` when the app
    first reads the body, so once that arrives the request is in flight in a
    worker. Returns the socket and the body still to send."""
    body = json.dumps({"email": email, "password": "correct horse battery", "name": "Drain"})
    head = (
        "POST /api/users HTTP/1.1\r\nHost: keel\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(head.encode())
    interim = b""
    while b"\r\n\r\n" not in interim:
        chunk = client.recv(4096)
        assert chunk, interim
        interim += chunk
    assert interim.startswith(b"HTTP/1.1 100"), interim
    return client, body.encode()


def _read_response(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while True:
        chunk = client.recv(65536)
        if not chunk:
            return received
        received += chunk


def test_keel_serve_forks_workers_replaces_a_dead_one_and_drains_on_sigterm(
    committed_db: Any, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["WEB_CONCURRENCY"] = "2"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            env=env,
            cwd=str(REPO_ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    in_flight: Optional[socket.socket] = None
    try:
        wait_until_healthy(base, proc)
        workers = wait_until(
            lambda: len(_children(proc.pid)) == 2 and _children(proc.pid), 30, "2 workers"
        )
        if memory_backed_dir():  # the heartbeat file lives in memory, not on disk
            for pid in workers:
                links = _open_files(pid)
                assert any(link.startswith("/dev/shm/wgunicorn-") for link in links), links
        # A worker that dies is replaced.
        lost = workers[0]
        os.kill(lost, signal.SIGKILL)

        def replaced() -> Any:
            children = _children(proc.pid)
            return len(children) == 2 and lost not in children and children

        workers = wait_until(replaced, 30, "a replacement worker")
        wait_until_healthy(base, proc)
        # gunicorn runs in the `keel serve` process itself, not in an exec'd one.
        assert b"app" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        for _ in range(20):
            assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        metrics_dir = wait_until(lambda: _metrics_dir(workers), 10, "metrics files")
        if memory_backed_dir():  # so do the multiprocess metrics
            assert metrics_dir.parent == Path("/dev/shm")
        metrics = httpx.get(f"{base}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert 'keel_http_requests_total{method="GET",route="/health",status="200"}' in metrics.text

        # SIGTERM with a request in flight: it is answered in full, then all stop.
        in_flight, rest = _start_in_flight_sign_up(port, "drain@example.com")
        proc.send_signal(signal.SIGTERM)
        in_flight.sendall(rest)
        answer = _read_response(in_flight)
        assert answer.startswith(b"HTTP/1.1 201"), answer[:500]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["email"] == "drain@example.com"
        assert proc.wait(60) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert not metrics_dir.exists()  # keel serve made it, keel serve removed it
    finally:
        if in_flight is not None:
            in_flight.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert b"Traceback" not in log.read_bytes(), log.read_text()[-3000:]
