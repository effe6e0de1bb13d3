"""Benchmark: POST /api/upload-csv (streamed) against the naive approach.

    .venv/bin/python bench/csv_upload.py [--sizes 10,50] [--repeat 3] [--skip-huge]

Generates CSV files (id,name,email + 5 numeric columns) under /tmp, starts the
real server (uvicorn, one process) and, as the baseline, a naive server in
the same run: FastAPI `UploadFile` (spooled to a temp file) + `pd.read_csv` of
the whole file + cleaning + `describe()`. Each size gets fresh processes:
- wall time per upload (client side, best and median of --repeat), keel and
  naive running side by side with their uploads alternated (the order flips
  every round), and the ratio of each round's pair;
- the server's peak RSS growth: VmHWM after the uploads minus VmRSS after a
  warm-up request;
- a 500 MB upload sent with chunked encoding (no Content-Length): how many
  bytes the server read before answering 413 (server-side rchar from
  /proc/<pid>/io, and the client's bytes sent, an upper bound that includes
  the kernel socket buffers);
- /health p99 latency while 50 MB uploads are processed.
Everything on 127.0.0.1; uses DATABASE_URL/REDIS_URL if set, else the
embedded servers (as `keel dev` does) in /tmp/keel-bench-csv.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
from common import EVENT_LOOP, free_port, uvicorn_argv
from fastapi import FastAPI, UploadFile

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path("/tmp/keel-bench-csv")
BOUNDARY = "benchboundary" + uuid.uuid4().hex
MiB = 1024 * 1024


# ------------------------------------------------------------------ naive server
naive_app = FastAPI()


@naive_app.post("/api/upload-csv")
def naive_upload(file: UploadFile) -> Dict[str, Any]:
    """The baseline: Starlette spools the upload, pandas reads all of it."""
    df = pd.read_csv(file.file)
    df = df[df["email"].notna()].copy()
    df["email"] = df["email"].astype(str).str.strip().str.lower()
    df = df[df["email"] != ""]
    described = df.describe()
    summary = {
        column: {k: (None if not math.isfinite(v) else float(v)) for k, v in stats.items()}
        for column, stats in described.to_dict().items()
    }
    return {
        "total_rows": int(len(df)),
        "unique_emails": int(df["email"].nunique()),
        "summary": summary,
    }


@naive_app.get("/health")
async def naive_health() -> Dict[str, str]:
    return {"status": "ok"}


# ------------------------------------------------------------------ data
def generate_csv(path: Path, size: int) -> Path:
    """id,name,email + 5 numeric columns, about `size` bytes (cached)."""
    if path.exists() and path.stat().st_size >= size:
        return path
    rng = np.random.default_rng(7)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as out:
        out.write("id,name,email,age,score,amount,lat,lon\n")
        written, start, n = 0, 0, 20000
        while written < size:
            ids = np.arange(start, start + n)
            age = rng.integers(18, 90, n)
            score = rng.normal(50, 10, n)
            amount = rng.exponential(100, n)
            lat = rng.uniform(-90, 90, n)
            lon = rng.uniform(-180, 180, n)
            lines = [
                f"{ids[k]},Name {ids[k]}, User{ids[k] % 400000}@Example.com ,{age[k]},"
                f"{score[k]:.6f},{amount[k]:.2f},{lat[k]:.5f},{lon[k]:.5f}\n"
                for k in range(n)
            ]
            chunk = "".join(lines)
            out.write(chunk)
            written += len(chunk)
            start += n
    tmp.rename(path)
    return path


def multipart_parts(filename: str) -> Tuple[bytes, bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: text/csv\r\n\r\n'
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head, tail


# ------------------------------------------------------------------ servers
class Server:
    def __init__(self, name: str, argv: List[str], env: Dict[str, str], port: int) -> None:
        self.name = name
        self.port = port
        self.log_path = Path(f"/tmp/keel-bench-{name}-{port}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, env=env, cwd=str(ROOT), stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status, _ = request("GET", "/health", port=port)
                if status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{name} did not start")

    def status(self) -> Dict[str, int]:
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
        return fields

    def rchar(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
        return -1

    def logged_body_bytes(self) -> Optional[int]:
        """body_bytes_read of the last refused upload, from the server's log."""
        self.log.flush()
        found = None
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "body_bytes_read=" in line:
                found = int(line.split("body_bytes_read=")[1].split()[0].strip('",}'))
        return found

    def stop(self) -> None:
        self.log.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def request(
    method: str,
    path: str,
    *,
    port: int,
    body: Optional[bytes] = None,
    headers: Optional[Dict[str, str]] = None,
) -> Tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def upload(
    port: int, token: Optional[str], file_bytes: bytes, *, chunked: bool = False
) -> Tuple[int, bytes, float]:
    head, tail = multipart_parts("data.csv")
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = head + file_bytes + tail
    started = time.perf_counter()
    status, payload = request("POST", "/api/upload-csv", port=port, body=body, headers=headers)
    return status, payload, time.perf_counter() - started


def huge_upload(port: int, token: Optional[str], total: int) -> Tuple[int, bytes, int]:
    """Send `total` bytes of CSV with chunked encoding (no Content-Length).
    Returns (status, body, bytes the client managed to send)."""
    head, tail = multipart_parts("huge.csv")
    row_block = b"".join(
        b"%d,Name %d,user%d@example.com,%d,1.5,2.5,3.5,4.5\n" % (i, i, i, i % 90)
        for i in range(4000)
    )
    lines = [
        "POST /api/upload-csv HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        "Transfer-Encoding: chunked",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    request_head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    sent_body = 0
    response = b""

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n" % len(data) + data + b"\r\n"

    pending = request_head + chunk(head + b"id,name,email,age,score,amount,lat,lon\n")
    done_sending = False
    try:
        while True:
            readable, writable, _ = select.select([sock], [] if done_sending else [sock], [], 30)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                response += data
                if b"\r\n\r\n" in response and _complete(response):
                    break
                continue
            if not writable and not readable:
                break
            if not pending:
                if sent_body >= total:
                    pending = chunk(tail) + b"0\r\n\r\n"
                    done_sending = True
                else:
                    pending = chunk(row_block)
                    sent_body += len(row_block)
            try:
                n = sock.send(pending)
                pending = pending[n:]
            except (BrokenPipeError, ConnectionResetError):
                done_sending = True
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        sock.close()
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0
    return status, response.split(b"\r\n\r\n", 1)[-1], sent_body


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


# ------------------------------------------------------------------ scenarios
def server_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DATA_DIR", str(DATA_DIR))
    env["ENVIRONMENT"] = "development"
    env["LOG_LEVEL"] = "INFO"
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_keel(env: Dict[str, str]) -> Server:
    port = free_port()
    argv = uvicorn_argv(port, "--log-level", "warning")
    return Server("keel", argv, env, port)


def start_naive(env: Dict[str, str]) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "csv_upload:naive_app",
        "--app-dir",
        str(ROOT / "bench"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--loop",
        EVENT_LOOP,
    ]
    return Server("naive", argv, env, port)


def access_token(port: int) -> str:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    password = "bench-password-1"
    status, body = request(
        "POST",
        "/api/users",
        port=port,
        body=json.dumps({"email": email, "password": password, "name": "Bench"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 201, body
    status, body = request(
        "POST",
        "/token",
        port=port,
        body=f"username={email}&password={password}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, body
    return json.loads(body)["access_token"]


# A warm server: one 2 MB upload first, so thread pools and lazily built
# state exist before the baseline RSS is read (they are not per-upload cost).
WARMUP_MB = 2


def warm_up(server: Server, token: Optional[str], data: bytes) -> None:
    head = data[: WARMUP_MB * 1_000_000]
    status, body, _ = upload(server.port, token, head[: head.rfind(b"\n") + 1])
    assert status == 200, body


def measure_uploads(
    servers: List[Tuple[Server, Optional[str]]], data: bytes, repeat: int
) -> List[Dict[str, Any]]:
    """Upload `data` `repeat` times to each server, alternating (the order
    flips every round), so that both see the same load on a shared machine.
    Per server: wall times, best, median, peak RSS growth, last result."""
    baselines = []
    for server, token in servers:
        warm_up(server, token, data)
        baselines.append(server.status()["VmRSS"])
    times: List[List[float]] = [[] for _ in servers]
    results: List[Any] = [None for _ in servers]
    for round_number in range(repeat):
        order = list(range(len(servers)))
        if round_number % 2:
            order.reverse()
        for index in order:
            server, token = servers[index]
            status, body, elapsed = upload(server.port, token, data)
            assert status == 200, body[:300]
            times[index].append(elapsed)
            results[index] = json.loads(body)
    return [
        {
            "times": times[index],
            "best": min(times[index]),
            "median": statistics.median(times[index]),
            "rss_growth": server.status()["VmHWM"] - baselines[index],
            "result": results[index],
        }
        for index, (server, _) in enumerate(servers)
    ]


def paired_ratios(ours: Dict[str, Any], naive: Dict[str, Any]) -> List[float]:
    """naive / keel time of each round (both uploads ran back to back)."""
    return [slow / fast for fast, slow in zip(ours["times"], naive["times"])]


def idle_health(server: Server, probes: int = 500) -> Dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    latencies = []
    for _ in range(probes):
        started = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.002)
    conn.close()
    ordered = sorted(latencies)
    return {
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
    }


def health_p99(server: Server, token: Optional[str], data: bytes, uploads: int) -> Dict[str, Any]:
    latencies: List[float] = []
    stop = threading.Event()

    def probe() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        while not stop.is_set():
            started = time.perf_counter()
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.002)
        conn.close()

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        for _ in range(uploads):
            status, body, _ = upload(server.port, token, data)
            assert status == 200, body[:300]
    finally:
        stop.set()
        thread.join()
    ordered = sorted(latencies)
    return {
        "samples": len(ordered),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def same_summary(ours: Dict[str, Any], naive: Dict[str, Any]) -> bool:
    if ours["total_rows"] != naive["total_rows"]:
        return False
    if ours["unique_emails"] != naive["unique_emails"]:
        return False
    if set(ours["summary"]) != set(naive["summary"]):
        return False
    for column, stats in ours["summary"].items():
        for key, value in stats.items():
            other = naive["summary"][column][key]
            if (value is None) != (other is None):
                return False
            if value is not None and not math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-9):
                return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,50", help="file sizes in MB")
    parser.add_argument("--repeat", type=int, default=9, help="uploads per server and size")
    parser.add_argument("--huge-mb", type=int, default=500)
    parser.add_argument("--skip-huge", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("DATA_DIR", str(DATA_DIR))
    sys.path.insert(0, str(ROOT))
    from app.dev import embedded
    from app.dev.launcher import prepare_environment

    env = server_env()
    env.update(prepare_environment())
    subprocess.run([sys.executable, "-m", "app", "migrate"], env=env, check=True, cwd=str(ROOT))

    sizes = [int(s) for s in args.sizes.split(",")]
    files = {mb: generate_csv(Path(f"/tmp/keel-bench-{mb}mb.csv"), mb * 1_000_000) for mb in sizes}
    print(
        f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, "
        f"load average at start {os.getloadavg()[0]:.2f} (other processes share the cores: "
        "compare the ratios, not the times)"
    )
    rows = []
    try:
        for mb in sizes:
            data = files[mb].read_bytes()
            # Both servers run at once and the uploads alternate: the ratio
            # compares runs made under the same machine load.
            keel = start_keel(env)
            naive_server = start_naive(env)
            try:
                token = access_token(keel.port)
                ours, naive = measure_uploads(
                    [(keel, token), (naive_server, None)], data, args.repeat
                )
            finally:
                keel.stop()
                naive_server.stop()
            agree = same_summary(ours["result"], naive["result"])
            rows.append((mb, len(data), ours, naive, agree))
            ratios = paired_ratios(ours, naive)
            print(
                f"{mb:>4} MB ({len(data) / MiB:.1f} MiB), {args.repeat} uploads each, "
                f"alternated: keel {ours['best']:.3f}s (median {ours['median']:.3f}s), "
                f"RSS +{ours['rss_growth'] / MiB:.1f} MiB | "
                f"naive {naive['best']:.3f}s (median {naive['median']:.3f}s), "
                f"RSS +{naive['rss_growth'] / MiB:.1f} MiB | "
                f"speed-up x{naive['best'] / ours['best']:.2f} best/best, "
                f"x{naive['median'] / ours['median']:.2f} median/median, "
                f"x{statistics.median(ratios):.2f} median of paired rounds "
                f"(min x{min(ratios):.2f}, max x{max(ratios):.2f}), "
                f"memory ratio {naive['rss_growth'] / max(ours['rss_growth'], 1):.1f}, "
                f"same summary: {agree}",
                flush=True,
            )

        largest = files[max(sizes)].read_bytes()
        keel = start_keel(env)
        try:
            token = access_token(keel.port)
            warm_up(keel, token, largest)
            idle = idle_health(keel)
            print(
                f"/health idle (keel, baseline): p50 {idle['p50_ms']:.1f} ms, "
                f"p99 {idle['p99_ms']:.1f} ms",
                flush=True,
            )
            health = health_p99(keel, token, largest, uploads=3)
            print(
                f"/health during {max(sizes)} MB uploads (keel): p50 {health['p50_ms']:.1f} ms, "
                f"p99 {health['p99_ms']:.1f} ms, max {health['max_ms']:.1f} ms "
                f"({health['samples']} probes)",
                flush=True,
            )
            if not args.skip_huge:
                before = keel.rchar()
                status, body, sent = huge_upload(keel.port, token, args.huge_mb * 1_000_000)
                read = keel.rchar() - before
                time.sleep(0.5)
                logged = keel.logged_body_bytes()
                logged_text = f"{logged / MiB:.2f} MiB" if logged else "n/a"
                print(
                    f"{args.huge_mb} MB chunked upload (keel): HTTP {status} {body[:80]!r}; "
                    f"body bytes received when refusing: {logged_text} (limit "
                    f"{50:.0f} MiB); process rchar {read / MiB:.1f} MiB and client sent "
                    f"{sent / MiB:.1f} MiB (both include what the kernel buffered and "
                    "uvicorn discarded until the connection closed)",
                    flush=True,
                )
        finally:
            keel.stop()
        naive_server = start_naive(env)
        try:
            warm_up(naive_server, None, largest)
            health = health_p99(naive_server, None, largest, uploads=3)
            print(
                f"/health during {max(sizes)} MB uploads (naive): p50 {health['p50_ms']:.1f} ms, "
                f"p99 {health['p99_ms']:.1f} ms, max {health['max_ms']:.1f} ms",
                flush=True,
            )
        finally:
            naive_server.stop()
    finally:
        embedded.stop_all()
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0 if all(agree for *_, agree in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
