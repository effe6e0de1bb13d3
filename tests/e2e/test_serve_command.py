"""`keel serve`: gunicorn in the same process, the app preloaded once, workers
forked from it; metrics from every worker; SIGTERM stops everything cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional, Set

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


def _held_connections(pid: int, port: int) -> int:
    """Established TCP connections to `port` whose sockets process `pid` holds."""
    sockets = [link for link in _open_files(pid) if link.startswith("socket:[")]
    inodes = {link[len("socket:[") : -1] for link in sockets}
    held = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()  # sl local remote state ... inode (10th)
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:
            held += 1
    return held


def _assert_connections_balanced(port: int, workers: List[int], burst: int = 20) -> None:
    """Connections opened in a burst end up spread over the workers
    (app/core/balance.py); without balancing, one worker takes most."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(burst)]
    try:
        for client in clients:
            client.sendall(b"GET /health HTTP/1.1\r\nHost: keel\r\n\r\n")
        for client in clients:
            assert client.recv(65536).startswith(b"HTTP/1.1 200")

        def settled() -> Optional[List[int]]:
            held = [_held_connections(pid, port) for pid in workers]
            return held if sum(held) == burst else None

        split = wait_until(settled, 10, f"{burst} connections held")
        assert min(split) >= burst // len(workers) - 3, split
    finally:
        for client in clients:
            client.close()


def _cpus(pid: int) -> Set[int]:
    return os.sched_getaffinity(pid)


def _assert_one_cpu_each(workers: List[int]) -> None:
    """PIN_WORKERS (default): with at least as many CPUs as workers, each
    worker has a CPU of its own; otherwise none is pinned."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) >= len(workers):
        # A new worker pins itself just after the fork: give it that moment.
        wait_until(lambda: all(len(_cpus(pid)) == 1 for pid in workers), 10, "every worker pinned")
        assert len(set.union(*(_cpus(pid) for pid in workers))) == len(workers)
    else:
        assert all(_cpus(pid) == allowed for pid in workers)


def test_keel_serve_preloads_forks_workers_and_stops_cleanly(
    committed_db: Any, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--workers", "2", "--port", str(port)],
            env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            cwd=str(REPO_ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc)
        workers = wait_until(
            lambda: len(_children(proc.pid)) == 2 and _children(proc.pid), 30, "2 workers"
        )
        _assert_one_cpu_each(workers)
        if memory_backed_dir():  # the heartbeat file lives in memory, not on disk
            for pid in workers:
                links = _open_files(pid)
                assert any(link.startswith("/dev/shm/wgunicorn-") for link in links), links
        # A worker that dies is replaced on the CPU it left.
        lost, survivor = workers
        lost_cpus = _cpus(lost)
        os.kill(lost, signal.SIGKILL)

        def replaced() -> Any:
            children = _children(proc.pid)
            return len(children) == 2 and lost not in children and children

        workers = wait_until(replaced, 30, "a replacement worker")
        _assert_one_cpu_each(workers)
        if len(os.sched_getaffinity(0)) >= 2:
            replacement = next(pid for pid in workers if pid != survivor)
            assert _cpus(replacement) == lost_cpus
        wait_until_healthy(base, proc)
        # Balanced over both workers, the replacement included (the dead
        # worker's slot on the board was freed).
        _assert_connections_balanced(port, workers)
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
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert not metrics_dir.exists()  # keel serve made it, keel serve removed it
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert b"Traceback" not in log.read_bytes(), log.read_text()[-3000:]
