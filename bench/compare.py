"""Today's main against the new code, in one run, as ratios.

    .venv/bin/python bench/compare.py [--baseline 89ca92c] [--new REV]
        [--duration 10] [--rounds 3] [--no-naive] [--scripts]

"old" is a git worktree of --baseline under .keel/bench-baseline, "new" is
this checkout (or, with --new REV, a worktree of REV under .keel/bench-new);
each worktree gets its own venv (`make install`, sharing uv's cache). Each
side gets a fresh, migrated database on the machine's PostgreSQL
(BENCH_DATABASE_URL's server, default postgres@127.0.0.1:5432), its own
Redis database (12 old, 13 new; emptied first), a user with 200 posts, and a
logistic regression and a 100-tree forest trained by its own
`keel train-model`.

Each round measures, for every group below, the old side and then the new
one, starting that side's server(s) for the group and stopping them after,
so only one server runs at a time (A, B, A, B, ...). One worker everywhere,
wrk with one thread and 64 keep-alive connections, a warm-up before each
server's first measurement:
  * floor: bench/floor.py (one FastAPI route, the API's auth dependency, a
    constant body) under gunicorn with the side's `app.gunicorn_conf`, i.e.
    the server and worker class `keel serve` uses;
  * `keel serve --workers 1` with the logistic regression active:
    GET /api/users/me, GET /api/posts?limit=50, POST /api/predict, then
    /health p50/p99 idle and under 8 concurrent sign-ups (bench/foundation.py);
  * `keel serve --workers 1` with the forest active: POST /api/predict;
  * unless --no-naive: the naive scikit-learn endpoint of bench/predict.py
    (no auth) for each model, in the side's gunicorn server.
The table gives medians over the rounds: req/s, p50, p99, server CPU per
request, the fraction of the floor (the median of each round's ratio to the
floor measured in the same round), and new/old req/s. With --scripts it then
runs each side's own bench/transfers.py, csv_upload.py and emails.py with
short settings and prints their summaries. Load averages are printed at the
start and the end: on a shared machine compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import httpx
from common import (
    ADMIN_URL,
    ROOT,
    admin_execute,
    ensure_wrk,
    free_port,
    process_tree_cpu_seconds,
    run_wrk,
)
from foundation import measure_health
from predict import write_script

BENCH = Path(__file__).resolve().parent
KINDS = ("logreg", "forest")
CONNECTIONS = 64
# req/s of `GET /api/users/me` in the most-used FastAPI template, one worker,
# 64 clients, on the machine class the goals were set on.
TEMPLATE_RPS = 504
POSTS = 200
PASSWORD = "bench-password-1"
# Token lifetime: the whole run, so no request is refused for expiry.
TOKEN_MINUTES = "600"


# ------------------------------------------------------------------- sides
@dataclass
class Side:
    name: str  # "old" or "new"
    rev: str
    root: Path
    redis_db: int
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="keel-compare-")))
    database: str = ""
    token: str = ""
    floor_auth: str = ""

    @property
    def python(self) -> str:
        return str(self.root / ".venv" / "bin" / "python")

    @property
    def database_url(self) -> str:
        from sqlalchemy.engine import make_url

        url = make_url(ADMIN_URL).set(database=self.database)
        return url.render_as_string(hide_password=False)

    def env(self, model_kind: str = "logreg") -> Dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "GUNICORN_"))}
        for name in ("DATABASE_URL", "REDIS_URL", "MODEL_DIR", "DATA_DIR", "PYTHONPATH"):
            keep.pop(name, None)
        return {
            **keep,
            "PYTHONPATH": str(self.root),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": f"redis://127.0.0.1:6379/{self.redis_db}",
            "DATA_DIR": str(self.work / "data"),
            "MODEL_DIR": str(self.work / "models" / model_kind),
            "ENVIRONMENT": "development",
            "SECRET_KEY": SECRET_KEY,
            "ACCESS_TOKEN_MINUTES": TOKEN_MINUTES,
            "BCRYPT_ROUNDS": "12",
            "LOG_LEVEL": "WARNING",
            "GUNICORN_CMD_ARGS": "--log-level warning",
        }


SECRET_KEY = secrets.token_urlsafe(48)


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def worktree(rev: str, path: Path) -> Path:
    """A detached worktree of `rev` at `path` with its venv (reused if it is
    already at that commit)."""
    commit = git("rev-parse", f"{rev}^{{commit}}")
    if path.exists():
        try:
            current = git("rev-parse", "HEAD", cwd=path)
        except subprocess.CalledProcessError:
            current = ""
        if current != commit:
            git("worktree", "remove", "--force", str(path))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--detach", str(path), commit)
    print(f"  {path}: {git('log', '--oneline', '-1', cwd=path)}", flush=True)
    # make install: uv sync from the worktree's own lock into its .venv; uv's
    # package cache is shared, so this mostly links files.
    make_install(path)
    return path


def make_install(path: Path) -> None:
    done = subprocess.run(["make", "install"], cwd=path, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"make install in {path} failed:\n{done.stdout}\n{done.stderr}")


def side_run(side: Side, *argv: str, model_kind: str = "logreg") -> str:
    result = subprocess.run(
        [side.python, *argv],
        cwd=side.root,
        env=side.env(model_kind),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{side.name}: {argv} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def prepare(side: Side) -> None:
    """Database, Redis, models and the floor's auth dependency of one side."""
    import redis

    side.database = f"keel_compare_{side.name}_{uuid.uuid4().hex[:8]}"
    admin_execute(ADMIN_URL, f'CREATE DATABASE "{side.database}"')
    redis.Redis.from_url(side.env()["REDIS_URL"]).flushdb()
    side_run(side, "-m", "app", "migrate")
    for kind in KINDS:
        side_run(side, "-m", "app", "train-model", "--kind", kind, model_kind=kind)
    side.floor_auth = side_run(
        side,
        "-c",
        "import sys; sys.path.insert(0, sys.argv[1]); import floor; "
        "print(floor.AUTH.__module__ + '.' + floor.AUTH.__qualname__)",
        str(BENCH),
    ).strip()


def drop(side: Side) -> None:
    if side.database:
        admin_execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{side.database}" WITH (FORCE)')


# ------------------------------------------------------------------ servers
class Running:
    """One server process group, started and waited for until `ready` holds."""

    def __init__(
        self, argv: List[str], side: Side, env: Dict[str, str], ready: Callable[[str], bool]
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [part.replace("{port}", str(self.port)) for part in argv]
        self.log = side.work / f"server-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=side.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while not self._ready(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready: {argv}; log: {self.log}")
            time.sleep(0.05)

    def _ready(self, ready: Callable[[str], bool]) -> bool:
        try:
            return ready(self.base)
        except httpx.TransportError:
            return False

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The master only: it stops its workers gracefully.
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def keel_serve(side: Side, kind: str) -> Running:
    argv = [side.python, "-m", "app", "serve", "--workers", "1"]
    argv += ["--host", "127.0.0.1", "--port", "{port}"]
    return Running(argv, side, side.env(kind), health_ok)


def gunicorn(side: Side, target: str, env: Dict[str, str], ready: Callable[[str], bool]) -> Running:
    """A bench/ ASGI app in the side's own gunicorn setup (`keel serve`'s
    config file, hence its worker class, event loop and hooks), one worker."""
    argv = [side.python, "-m", "gunicorn", "-c", "python:app.gunicorn_conf", "-w", "1"]
    argv += ["--chdir", str(BENCH), "--bind", "127.0.0.1:{port}", target]
    return Running(argv, side, env, ready)


def health_ok(base: str) -> bool:
    return httpx.get(f"{base}/health", timeout=2).status_code == 200


def auth_headers(side: Side) -> Dict[str, str]:
    return {"Authorization": f"Bearer {side.token}"}


# ------------------------------------------------------------------ seeding
def seed(side: Side) -> None:
    """A user, its token and 200 posts, through the API as clients create them."""
    with (
        keel_serve(side, "logreg") as running,
        httpx.Client(base_url=running.base, timeout=30) as http,
    ):
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        created = http.post("/api/users", json={"email": email, "password": PASSWORD, "name": "B"})
        assert created.status_code == 201, created.text
        token = http.post("/token", data={"username": email, "password": PASSWORD})
        assert token.status_code == 200, token.text
        side.token = token.json()["access_token"]
        for i in range(POSTS):
            response = http.post(
                "/api/posts",
                json={"title": f"post {i}", "body": "x" * 500},
                headers=auth_headers(side),
            )
            assert response.status_code == 201, response.text


# -------------------------------------------------------------- measuring
Result = Dict[str, float]
# (side, endpoint) -> one result per round
Results = Dict[Tuple[str, str], List[Result]]


def feature_row(side: Side) -> List[float]:
    parity = side.work / "models" / "logreg" / "v1" / "parity.json"
    return list(json.loads(parity.read_text())["inputs"][0])


def measure(
    running: Running,
    path: str,
    seconds: int,
    headers: Optional[Dict[str, str]] = None,
    script: Optional[str] = None,
) -> Result:
    before = running.cpu_seconds()
    result = run_wrk(
        f"{running.base}{path}",
        connections=CONNECTIONS,
        seconds=seconds,
        threads=1,
        headers=headers,
        script=script,
    )
    requests = result["rps"] * seconds
    result["cpu_us"] = (running.cpu_seconds() - before) / max(requests, 1) * 1e6
    if result["non_2xx"] or result["socket_errors"]:
        print(
            f"    !! {path}: non-2xx {result['non_2xx']:.0f}, errors {result['socket_errors']:.0f}"
        )
    return result


def warm(running: Running, path: str, headers: Dict[str, str], script: Optional[str]) -> None:
    run_wrk(
        f"{running.base}{path}",
        connections=CONNECTIONS,
        seconds=2,
        threads=1,
        headers=headers,
        script=script,
    )


def show(side: Side, endpoint: str, r: Result) -> None:
    print(
        f"  {side.name:3s} {endpoint:24s} {r['rps']:8.0f} req/s  p50 {r['p50']:7.2f} ms  "
        f"p99 {r['p99']:7.2f} ms  {r['cpu_us']:6.0f} us CPU/req",
        flush=True,
    )


def one_round(side: Side, args: argparse.Namespace, results: Results, group: str) -> None:
    d = args.duration
    headers = auth_headers(side)
    body = json.dumps({"features": feature_row(side)})
    predict_script = str(write_script(side.work, "predict", body, None))

    def record(endpoint: str, r: Result) -> None:
        results.setdefault((side.name, endpoint), []).append(r)
        if "rps" in r:
            show(side, endpoint, r)

    if group == "floor":

        def floor_ready(base: str) -> bool:
            return httpx.get(f"{base}/floor", headers=headers, timeout=2).status_code == 200

        with gunicorn(side, "floor:app", side.env(), floor_ready) as running:
            warm(running, "/floor", headers, None)
            record("floor", measure(running, "/floor", d, headers))
    elif group == "keel-logreg":
        with keel_serve(side, "logreg") as running:
            warm(running, "/api/users/me", headers, None)
            record("GET /api/users/me", measure(running, "/api/users/me", d, headers))
            record("GET /api/posts", measure(running, "/api/posts?limit=50", d, headers))
            warm(running, "/api/predict", headers, predict_script)
            record(
                "POST /api/predict LR", measure(running, "/api/predict", d, headers, predict_script)
            )
            idle = measure_health(running.base, args.health_seconds / 2, with_signups=False)
            loaded = measure_health(running.base, args.health_seconds, with_signups=True)
            record(
                "health",
                {
                    "idle_p50": idle["p50"],
                    "idle_p99": idle["p99"],
                    "load_p50": loaded["p50"],
                    "load_p99": loaded["p99"],
                    "signups_per_s": loaded["signups_per_s"],
                },
            )
            print(
                f"  {side.name:3s} /health p99 idle {idle['p99']:.2f} ms, under 8 sign-ups "
                f"{loaded['p99']:.2f} ms ({loaded['signups_per_s']:.1f} sign-ups/s)",
                flush=True,
            )
    elif group == "keel-forest":
        with keel_serve(side, "forest") as running:
            warm(running, "/api/predict", headers, predict_script)
            record(
                "POST /api/predict RF", measure(running, "/api/predict", d, headers, predict_script)
            )
    elif group.startswith("naive-"):
        kind = group.split("-", 1)[1]
        env = {**side.env(kind), "KEEL_BENCH_NAIVE_KIND": kind}

        def naive_ready(base: str) -> bool:
            return (
                httpx.post(
                    f"{base}/api/predict",
                    content=body,
                    timeout=2,
                    headers={"Content-Type": "application/json"},
                ).status_code
                == 200
            )

        with gunicorn(side, "predict:naive_app()", env, naive_ready) as running:
            warm(running, "/api/predict", {}, predict_script)
            label = "LR" if kind == "logreg" else "RF"
            record(
                f"naive predict {label}", measure(running, "/api/predict", d, None, predict_script)
            )


# ----------------------------------------------------------------- report
ENDPOINTS = (
    "floor",
    "GET /api/users/me",
    "GET /api/posts",
    "POST /api/predict LR",
    "POST /api/predict RF",
    "naive predict LR",
    "naive predict RF",
)


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def per_round_ratio(top: List[Result], bottom: List[Result]) -> float:
    """Median of each round's ratio (both measured in the same round)."""
    return median([a["rps"] / b["rps"] for a, b in zip(top, bottom) if b["rps"]])


def report(sides: List[Side], results: Results) -> None:
    old, new = sides
    print(
        "\n## old = "
        + f"{old.rev}, new = {new.rev}: medians of {len(results[(old.name, 'floor')])} rounds,"
        f" one worker, wrk -t1 -c{CONNECTIONS}"
    )
    head = ["endpoint"]
    for side in sides:
        head += [
            f"{side.name} req/s",
            f"{side.name} p50 ms",
            f"{side.name} p99 ms",
            f"{side.name} CPU us/req",
            f"{side.name} of floor",
        ]
    head.append("new/old req/s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for endpoint in ENDPOINTS:
        cells = [endpoint]
        rps = {}
        for side in sides:
            runs = results.get((side.name, endpoint), [])
            if not runs:
                cells += ["–"] * 5
                continue
            rps[side.name] = median([r["rps"] for r in runs])
            fraction = per_round_ratio(runs, results[(side.name, "floor")])
            cells += [
                f"{rps[side.name]:.0f}",
                f"{median([r['p50'] for r in runs]):.2f}",
                f"{median([r['p99'] for r in runs]):.2f}",
                f"{median([r['cpu_us'] for r in runs]):.0f}",
                f"{fraction:.0%}",
            ]
        ratio = rps[new.name] / rps[old.name] if len(rps) == 2 else float("nan")
        cells.append(f"{ratio:.2f}x")
        print("| " + " | ".join(cells) + " |")

    print("\n| ratio (median of per-round ratios) | old | new |")
    print("|---|---|---|")
    rows: List[Tuple[str, Callable[[str], float]]] = [
        (
            "users/me p99 / p50",
            lambda s: median([r["p99"] / r["p50"] for r in results[(s, "GET /api/users/me")]]),
        ),
    ]
    for label, kind in (("LR", "LR"), ("RF", "RF")):
        if (new.name, f"naive predict {kind}") in results:
            rows.append(
                (
                    f"predict {label} / naive {label} (req/s, same server)",
                    lambda s, k=kind: per_round_ratio(
                        results[(s, f"POST /api/predict {k}")], results[(s, f"naive predict {k}")]
                    ),
                )
            )
    rows.append(
        (
            "/health p99 under 8 sign-ups / idle",
            lambda s: median([r["load_p99"] / r["idle_p99"] for r in results[(s, "health")]]),
        )
    )
    rows.append(
        (
            f"users/me req/s / {TEMPLATE_RPS} (the FastAPI template's figure in the issue)",
            lambda s: median([r["rps"] for r in results[(s, "GET /api/users/me")]]) / TEMPLATE_RPS,
        )
    )
    for label, value in rows:
        print(f"| {label} | {value(old.name):.2f} | {value(new.name):.2f} |")
    print("\n| /health (ms, medians) | old | new |")
    print("|---|---|---|")
    for key, label in (
        ("idle_p50", "idle p50"),
        ("idle_p99", "idle p99"),
        ("load_p50", "8 sign-ups p50"),
        ("load_p99", "8 sign-ups p99"),
        ("signups_per_s", "sign-ups/s"),
    ):
        vals = [median([r[key] for r in results[(s.name, "health")]]) for s in sides]
        print(f"| {label} | {vals[0]:.2f} | {vals[1]:.2f} |")
    for side in sides:
        print(f"floor auth dependency, {side.name}: {side.floor_auth}")


# ---------------------------------------------------------- other scripts
SCRIPTS = {
    "transfers": ["--seconds", "5", "--warmup", "1"],
    "csv_upload": ["--sizes", "10", "--repeat", "3", "--skip-huge"],
    "emails": ["--emails", "1000", "--noops", "2000"],
}


def run_scripts(sides: List[Side], timeout: float) -> None:
    for name, extra in SCRIPTS.items():
        for side in sides:
            env = side.env()
            env["BENCH_REDIS_URL"] = env["REDIS_URL"]
            env["BENCH_BROKER_URL"] = env["REDIS_URL"]
            if name != "csv_upload":  # it serves the side's database; the others make their own
                env.pop("DATABASE_URL")
                env.pop("REDIS_URL")
            print(f"\n### {side.name}: bench/{name}.py {' '.join(extra)}", flush=True)
            try:
                done = subprocess.run(
                    [side.python, f"bench/{name}.py", *extra],
                    cwd=side.root,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                print(f"(timed out after {timeout:.0f} s)")
                continue
            print(done.stdout[-4000:])
            if done.returncode:
                print(f"(exit {done.returncode})\n{done.stderr[-2000:]}")


# ------------------------------------------------------------------- main
def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="89ca92c", help="old side (default: 89ca92c)")
    parser.add_argument("--new", help="new side: a worktree of REV (default: this checkout)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="0: only --scripts")
    parser.add_argument(
        "--health-seconds",
        type=float,
        default=8.0,
        help="/health under sign-ups (idle: half of it)",
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive endpoints")
    parser.add_argument(
        "--scripts", action="store_true", help="then run transfers/csv_upload/emails on both sides"
    )
    parser.add_argument("--script-timeout", type=float, default=600.0)
    args = parser.parse_args()
    ensure_wrk()

    started = time.monotonic()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average at start: {loadavg()}; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    print("worktrees and venvs:", flush=True)
    keel_dir = ROOT / ".keel"
    old_root = worktree(args.baseline, keel_dir / "bench-baseline")
    if args.new:
        new_root = worktree(args.new, keel_dir / "bench-new")
        new_rev = git("rev-parse", "--short", "HEAD", cwd=new_root)
    else:
        new_root = ROOT
        make_install(ROOT)
        new_rev = f"this checkout ({git('rev-parse', '--short', 'HEAD')})"
    sides = [
        Side(
            "old",
            f"{args.baseline} ({git('rev-parse', '--short', 'HEAD', cwd=old_root)})",
            old_root,
            12,
        ),
        Side("new", new_rev, new_root, 13),
    ]
    results: Results = {}
    groups = ["floor", "keel-logreg", "keel-forest"]
    if not args.no_naive:
        groups += ["naive-logreg", "naive-forest"]
    try:
        for side in sides:
            print(f"preparing {side.name}: database, models, seed data ...", flush=True)
            prepare(side)
            seed(side)
        for number in range(1, args.rounds + 1):
            print(f"\nround {number}/{args.rounds} (load average {loadavg()})", flush=True)
            for group in groups:
                for side in sides:
                    one_round(side, args, results, group)
        if results:
            report(sides, results)
        if args.scripts:
            run_scripts(sides, args.script_timeout)
    finally:
        for side in sides:
            drop(side)
            shutil.rmtree(side.work, ignore_errors=True)
    print(f"\nload average at end: {loadavg()}; {time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
