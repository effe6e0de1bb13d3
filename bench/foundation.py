"""Foundation benchmark: event-loop health under sign-ups, and read throughput.

1. /health p50/p99 idle, then while 8 clients sign up concurrently (real
   bcrypt cost 12). Goal: p99 under load <= 3x idle p99.
2. Sign-ups/s at 8 clients.
3. wrk at 64 connections on GET /api/users/me and GET /api/posts (one uvicorn
   worker): req/s, p99, errors. Goal: no stall or error; /api/posts p99 < 100 ms.

Run: make bench  (or .venv/bin/python bench/foundation.py)
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Dict, List

import httpx
from common import bench_database, print_table, run_wrk, server, summary_ms

SIGNUP_CLIENTS = 8
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def poll_health(base: str, stop: threading.Event, out: List[float]) -> None:
    with httpx.Client(base_url=base, timeout=10) as http:
        while not stop.is_set():
            start = time.perf_counter()
            response = http.get("/health")
            out.append(time.perf_counter() - start)
            assert response.status_code == 200
            time.sleep(0.01)


def sign_up_loop(base: str, stop: threading.Event, counts: Dict[str, int]) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop.is_set():
            email = f"bench-{uuid.uuid4().hex}@example.com"
            response = http.post(
                "/api/users", json={"email": email, "password": "password-123", "name": "Bench"}
            )
            key = "ok" if response.status_code == 201 else f"status_{response.status_code}"
            counts[key] = counts.get(key, 0) + 1


def measure_health(base: str, seconds: float, with_signups: bool) -> Dict[str, float]:
    stop = threading.Event()
    latencies: List[float] = []
    counts: Dict[str, int] = {}
    threads = [threading.Thread(target=poll_health, args=(base, stop, latencies))]
    if with_signups:
        threads += [
            threading.Thread(target=sign_up_loop, args=(base, stop, counts))
            for _ in range(SIGNUP_CLIENTS)
        ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    result = summary_ms(latencies)
    result["signups_per_s"] = counts.get("ok", 0) / seconds
    result["signup_errors"] = float(sum(v for k, v in counts.items() if k != "ok"))
    return result


def seed_reader(base: str, posts: int) -> Dict[str, str]:
    with httpx.Client(base_url=base, timeout=30) as http:
        email = f"reader-{uuid.uuid4().hex}@example.com"
        http.post("/api/users", json={"email": email, "password": "password-123", "name": "R"})
        token = http.post("/token", data={"username": email, "password": "password-123"})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        for i in range(posts):
            http.post("/api/posts", json={"title": f"post {i}", "body": "x" * 500}, headers=headers)
    return headers


def main() -> None:
    with bench_database() as url:
        env = {
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "ENVIRONMENT": "development",
            "BCRYPT_ROUNDS": "12",
            "LOG_LEVEL": "WARNING",
        }
        with server(env) as base:
            idle = measure_health(base, 5, with_signups=False)
            loaded = measure_health(base, 10, with_signups=True)
            ratio = loaded["p99"] / idle["p99"]
            print_table(
                "/health latency (ms), idle vs 8 concurrent sign-ups (bcrypt cost 12)",
                [
                    {"phase": "idle", "n": idle["n"], "p50": idle["p50"], "p99": idle["p99"]},
                    {
                        "phase": "8 sign-ups",
                        "n": loaded["n"],
                        "p50": loaded["p50"],
                        "p99": loaded["p99"],
                    },
                ],
            )
            print(f"p99 ratio under load / idle: {ratio:.2f}x (goal <= 3x)")
            print(
                f"sign-ups/s at {SIGNUP_CLIENTS} clients: {loaded['signups_per_s']:.1f} "
                f"(errors: {loaded['signup_errors']:.0f})"
            )

            headers = seed_reader(base, posts=200)
            rows = []
            for path in ("/api/users/me", "/api/posts"):
                result = run_wrk(f"{base}{path}", connections=64, seconds=10, headers=headers)
                rows.append(
                    {
                        "endpoint": path,
                        "req/s": result["rps"],
                        "p50 ms": result["p50"],
                        "p99 ms": result["p99"],
                        "non-2xx": result["non_2xx"],
                        "socket errors": result["socket_errors"],
                    }
                )
            print_table("wrk, 64 connections, 10 s, one uvicorn worker", rows)
            health = run_wrk(f"{base}/health", connections=64, seconds=5)
            print(
                f"baseline GET /health at 64 connections: {health['rps']:.0f} req/s; "
                f"/api/users/me is {rows[0]['req/s'] / health['rps']:.2f}x of it"
            )  # type: ignore[operator]


if __name__ == "__main__":
    main()
