"""The fault drills of `deploy/cluster.sh drill`, under deploy/loadgen.py's load.

Each drill breaks one thing on purpose, lets the load run through it, and
checks what clients saw (the load generator's events, by time window and by
answering host), what HAProxy saw (its admin socket), and what was kept
(PostgreSQL, through its socket in the state folder; the mail sink's files).

A *failure* is a transport error or a 5xx answer; 4xx answers are business
outcomes (an account that ran dry answers 400 insufficient_funds).

After every drill the ledger is checked: the sum of all balances equals the
money paid in, every account's balance equals the sum of its entries, every
transfer has exactly its two entries, and every acknowledged write (a 201
transfer, a 202 job, a 201 sign-up) is in the database as acknowledged.
"""

from __future__ import annotations

import email
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from email import policy
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from cluster import (
    LB_URL,
    LOGS,
    STATE,
    VENV_BIN,
    add_host,
    alive,
    haproxy,
    in_ns,
    kill_namespace,
    log,
    log_size,
    namespace_pids,
    ns,
    pid_of,
    psql,
    redis_ping,
    run,
    server_stats,
    server_status,
    spawn,
    start_api,
    start_postgres,
    start_redis,
    start_worker,
    stop_postgres,
    wait_for,
    wait_server,
    wait_worker_ready,
)

LOAD = STATE / "load"
EMAIL_KINDS = ("emails.send", "users.send_welcome_email", "auth.send_password_reset_email")


# --------------------------------------------------------------- observations


class Events:
    """The load generator's record, re-read on demand."""

    def __init__(self) -> None:
        self.requests: List[Dict[str, Any]] = []
        self.acks: Dict[str, List[Dict[str, Any]]] = {
            "transfer": [],
            "job": [],
            "user": [],
            "login_started": [],
        }
        self._offset = 0

    def refresh(self) -> Events:
        path = LOAD / "events.jsonl"
        if not path.exists():
            return self
        with path.open() as source:
            source.seek(self._offset)
            data = source.read()
        complete = data[: data.rfind("\n") + 1]
        self._offset += len(complete.encode())
        for line in complete.splitlines():
            event = json.loads(line)
            if "ack" in event:
                self.acks[event["ack"]].append(event)
            else:
                self.requests.append(event)
        return self

    def between(self, t0: float, t1: float) -> List[Dict[str, Any]]:
        """Requests that were in progress at some point of [t0, t1]."""
        return [e for e in self.requests if e["t1"] >= t0 and e["t0"] <= t1]


CLIENT_OPS = ("me", "transfer", "send_email", "predict", "signup", "login")


def settle(events: Events, after: float, seconds: float = 90) -> None:
    """Wait until every load client has started a request after `after`:
    each client is sequential, so everything it began before is recorded."""

    def done() -> bool:
        latest: Dict[str, float] = {}
        for e in events.refresh().requests:
            latest[e["op"]] = max(latest.get(e["op"], 0.0), e["t0"])
        return all(latest.get(op, 0.0) > after for op in CLIENT_OPS)

    wait_for("every load client to move past the drill", done, seconds, every=0.25)


def wait_host_ready(host: str) -> float:
    """When `host`'s own /ready first answered 200 (probed from the client
    namespace, not through HAProxy)."""
    probe = subprocess.run(
        in_ns("client", str(VENV_BIN / "python"), "-c", READY_PROBE, f"{HOST_URL[host]}"),
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    if probe.returncode != 0:
        raise RuntimeError(f"{host} never became ready: {probe.stderr[-500:]}")
    return float(probe.stdout.strip())


HOST_URL = {h: f"http://10.200.0.{n}:8000" for h, n in (("api1", 11), ("api2", 12), ("api3", 13))}


def failed(event: Dict[str, Any]) -> bool:
    return bool(event["status"] == 0 or event["status"] >= 500)


def statuses(events: List[Dict[str, Any]]) -> Dict[str, int]:
    counts = Counter(str(e["status"]) if e["status"] else f"0:{e.get('error')}" for e in events)
    return dict(sorted(counts.items()))


def wait_load_progress(events: Events, seconds: float = 60) -> None:
    """Some successful requests after now: the load is flowing."""
    since = time.time()
    wait_for("the load to flow", lambda: sum(
        1 for e in events.refresh().requests if e["t0"] >= since and 200 <= e["status"] < 300
    ) >= 20, seconds, every=0.25)  # fmt: skip


def ledger(events: Events, funded_cents: int) -> Tuple[bool, str]:
    """The invariants, and every acknowledged write present as acknowledged."""
    events.refresh()
    rows = psql(
        "SELECT (SELECT COALESCE(SUM(balance), 0) FROM accounts),"
        " (SELECT COUNT(*) FROM accounts a WHERE a.balance <>"
        "   (SELECT COALESCE(SUM(amount), 0) FROM ledger_entries e WHERE e.account_id = a.id)),"
        " (SELECT COUNT(*) FROM transfers t WHERE"
        "   (SELECT COUNT(*) FROM ledger_entries e WHERE e.transfer_id = t.id) <> 2),"
        " (SELECT COUNT(*) FROM accounts WHERE balance < 0),"
        " (SELECT COUNT(*) FROM transfers)",
        "keel",
    ).strip()
    total, mismatched, bad_transfers, negative, transfers = rows.split("|")
    problems = []
    if Decimal(total) != Decimal(funded_cents) / 100:
        problems.append(f"sum of balances {total} != paid in {Decimal(funded_cents) / 100}")
    for label, value in (
        ("accounts whose balance != sum of entries", mismatched),
        ("transfers without exactly two entries", bad_transfers),
        ("negative balances", negative),
    ):
        if int(value):
            problems.append(f"{label}: {value}")
    acked = {int(a["id"]): Decimal(a["amount"]) for a in events.acks["transfer"]}
    if acked:
        found = psql(f"SELECT id, amount FROM transfers WHERE id IN ({','.join(map(str, acked))})",
                     "keel")  # fmt: skip
        stored = {int(i): Decimal(a) for i, a in (line.split("|") for line in found.split())}
        lost = [i for i, amount in acked.items() if stored.get(i) != amount]
        if lost:
            problems.append(f"acknowledged transfers lost or changed: {lost[:10]}")
    for kind, table in (("job", "jobs"), ("user", "users")):
        ids = {int(a["id"]) for a in events.acks[kind]}
        if ids:
            found_ids = psql(f"SELECT id FROM {table} WHERE id IN ({','.join(map(str, ids))})",
                             "keel")  # fmt: skip
            lost_ids = ids - {int(i) for i in found_ids.split()}
            if lost_ids:
                problems.append(f"acknowledged {table} rows lost: {sorted(lost_ids)[:10]}")
    summary = (
        f"ledger: {transfers} transfers, {len(acked)} acknowledged; "
        f"{len(events.acks['job'])} jobs, {len(events.acks['user'])} sign-ups acknowledged"
    )
    return not problems, summary + ("" if not problems else "; " + "; ".join(problems))


MESSAGE_ID = re.compile(r"<job-(\d+)\.")


def delivered() -> Counter:
    """Copies received per job id (from each message's Message-ID)."""
    copies: Counter = Counter()
    for path in (STATE / "mail").glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        match = MESSAGE_ID.match(str(message["Message-ID"]))
        if match:
            copies[int(match.group(1))] += 1
    return copies


def email_jobs_settled(before: float) -> Tuple[Dict[int, str], str]:
    """Status of every email job created before `before` (epoch seconds)."""
    out = psql(
        "SELECT id, status FROM jobs WHERE kind IN ("
        + ",".join(f"'{k}'" for k in EMAIL_KINDS)
        + f") AND created_at < to_timestamp({before})",
        "keel",
    )
    jobs = {int(i): s for i, s in (line.split("|") for line in out.split())}
    pending = sum(1 for s in jobs.values() if s not in ("succeeded", "dead"))
    return jobs, f"{pending} pending"


def check_emails(before: float, seconds: float = 120) -> Tuple[bool, str, Dict[str, int]]:
    """Every email job created before `before` ends `succeeded` and its
    Message-ID reaches the sink: once, or (a worker killed between the SMTP
    answer and recording success) as a recognisable copy."""

    def settled() -> Optional[Dict[int, str]]:
        jobs, _ = email_jobs_settled(before)
        return jobs if all(s in ("succeeded", "dead") for s in jobs.values()) else None

    jobs = wait_for("every email job to finish", settled, seconds, every=0.5)
    wanted = {i for i, s in jobs.items() if s == "succeeded"}
    copies = wait_for("every succeeded job's message at the sink",
                      lambda: (lambda c: c if wanted <= set(c) else None)(delivered()),
                      30, every=0.5)  # fmt: skip
    dead = sorted(i for i, s in jobs.items() if s == "dead")
    missing = sorted(wanted - set(copies))
    duplicates = {i: n for i, n in copies.items() if i in jobs and n > 1}
    counts = {
        "jobs": len(jobs),
        "delivered_message_ids": len(wanted & set(copies)),
        "dead": len(dead),
        "missing": len(missing),
        "extra_copies_same_message_id": sum(n - 1 for n in duplicates.values()),
    }
    ok = not dead and not missing
    return ok, f"emails: {counts}", counts


# --------------------------------------------------------------- drills


class Result:
    def __init__(self, number: int, name: str) -> None:
        self.number = number
        self.name = name
        self.checks: List[Tuple[str, bool]] = []
        self.counts: Dict[str, Any] = {}
        self.notes: List[str] = []

    def check(self, label: str, ok: bool) -> None:
        self.checks.append((label, bool(ok)))

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(ok for _, ok in self.checks)

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        failed_checks = [label for label, ok in self.checks if not ok]
        text = f"drill {self.number} {verdict}  {self.name}\n    counts: {json.dumps(self.counts)}"
        for note in self.notes:
            text += f"\n    {note}"
        if failed_checks:
            text += f"\n    failed checks: {failed_checks}"
        return text


class Drills:
    def __init__(self, events: Events, seed: Dict[str, Any]) -> None:
        self.events = events
        self.funded = int(seed["funded_cents"])

    def ledger_check(self, result: Result) -> None:
        ok, summary = ledger(self.events, self.funded)
        result.notes.append(summary)
        result.check("ledger invariants and acknowledged writes", ok)

    def restart_api(self, host: str) -> None:
        if namespace_pids(host):
            kill_namespace(ns(host), signal.SIGKILL)
            wait_for(f"{host} to exit", lambda: not namespace_pids(host), 15)
        start_api(host)
        wait_host_ready(host)
        wait_server(host, "UP", 60)

    # 1 ----------------------------------------------------------------
    def kill_api1(self) -> Result:
        r = Result(1, "kill -9 of api1")
        before = server_stats()["api1"]
        in_flight = int(before["scur"])
        t_kill = time.time()
        kill_namespace(ns("api1"), signal.SIGKILL)
        # Death is not instantaneous: until the last process has exited, its
        # listening socket still accepts connections.
        wait_for("api1's processes to exit", lambda: not namespace_pids("api1"), 15, every=0.005)
        t_gone = time.time()
        t_down = wait_server("api1", "DOWN", 15)
        after = server_stats()["api1"]
        sent_at_down = int(after["stot"])
        # HAProxy's own count of requests api1 held when it died: responses
        # that broke off, and sessions the server side aborted.
        aborted = sum(int(after[k] or 0) - int(before[k] or 0) for k in ("eresp", "srv_abrt"))
        time.sleep(3)  # the load runs on without api1
        sent_later = int(server_stats()["api1"]["stot"])
        t_end = time.time()
        settle(self.events, t_end)
        window = self.events.between(t_kill, t_end)
        failures = [e for e in window if failed(e)]
        started_after_down = [e for e in failures if e["t0"] > t_down]
        r.counts = {
            "in_flight_on_api1_at_kill": in_flight,
            "haproxy_aborted_on_api1": aborted,
            "requests_in_window": len(window),
            "client_failures": len(failures),
            "failures_by_status": statuses(failures),
            "failures_started_after_out_of_rotation": len(started_after_down),
            "seconds_until_processes_gone": round(t_gone - t_kill, 3),
            "seconds_to_out_of_rotation": round(t_down - t_kill, 2),
            "sent_to_api1_after_down": sent_later - sent_at_down,
        }
        r.check("HAProxy took api1 out within 3 s", t_down - t_kill <= 3)
        r.check("nothing sent to api1 after that", sent_later == sent_at_down)
        r.check("no failure among requests sent once api1 was out", not started_after_down)
        r.check("failures <= requests in flight on api1",
                len(failures) <= max(in_flight, aborted))  # fmt: skip
        self.restart_api("api1")
        self.ledger_check(r)
        return r

    # 2 ----------------------------------------------------------------
    def rolling_restart(self) -> Result:
        r = Result(2, "rolling restart of api1 then api2")
        t0 = time.time()
        steps = {}
        for host in ("api1", "api2"):
            start = time.time()
            haproxy(f"set server keel_api/{host} state drain")
            wait_for(f"{host} to drain", lambda h=host: server_stats()[h]["scur"] == "0", 60, 0.05)
            master = pid_of(host)
            assert master is not None and alive(master), f"{host} is not running"
            os.kill(master, signal.SIGTERM)  # gunicorn: graceful stop
            wait_for(f"{host} to stop", lambda h=host: not namespace_pids(h), 45)
            start_api(host)
            wait_host_ready(host)  # only then back into rotation
            haproxy(f"set server keel_api/{host} state ready")
            wait_server(host, "UP", 60)
            steps[host] = round(time.time() - start, 1)
        t1 = time.time()
        settle(self.events, t1)
        window = self.events.between(t0, t1)
        failures = [e for e in window if failed(e)]
        served = Counter(e.get("host") for e in window if e["status"])
        r.counts = {
            "requests_in_window": len(window),
            "failed": len(failures),
            "failures_by_status": statuses(failures),
            "served_by": dict(served),
            "seconds_per_host": steps,
        }
        r.check("zero failed requests", not failures)
        self.ledger_check(r)
        return r

    # 3 ----------------------------------------------------------------
    def kill_worker1(self) -> Result:
        r = Result(3, "kill -9 of worker1 mid-batch")
        path = LOGS / "worker1.log"
        since = path.stat().st_size

        def mid_batch() -> bool:
            text = path.read_bytes()[since:].decode(errors="replace")
            return text.count("] received") > text.count("] succeeded")

        # A job takes milliseconds, so "mid-batch" is a moment a poll can miss on
        # a busy machine. Freezing the mail sink makes it a state: every job a
        # worker takes now waits on its SMTP conversation (then times out and
        # retries), so worker1 holds unfinished jobs until it is killed.
        kill_namespace(ns("mail"), signal.SIGSTOP)
        try:
            wait_for("worker1 to hold jobs it has not finished", mid_batch, 60, every=0.05)
            t_kill = time.time()
            kill_namespace(ns("worker1"), signal.SIGKILL)
            wait_for("worker1 to exit", lambda: not namespace_pids("worker1"), 15)
        finally:
            kill_namespace(ns("mail"), signal.SIGCONT)
        time.sleep(2)  # keep queueing while worker1 is gone
        ok, summary, counts = check_emails(time.time())
        r.counts = {**counts, "seconds_after_kill_until_all_delivered": round(
            time.time() - t_kill, 1)}  # fmt: skip
        r.notes.append(summary)
        r.check("every email job succeeded and its Message-ID reached the sink", ok)
        r.notes.append(
            "extra copies carry the same Message-ID (the window between SMTP's answer and"
            " recording success, per job in flight on the killed worker)"
        )
        since = log_size("worker1")
        start_worker("worker1")
        wait_worker_ready("worker1", since)
        self.ledger_check(r)
        return r

    # 4 ----------------------------------------------------------------
    def restart_postgres(self) -> Result:
        r = Result(4, "PostgreSQL restarted")
        masters = {h: pid_of(h) for h in ("api1", "api2")}
        t0 = time.time()
        stop_postgres()
        t_stopped = time.time()
        time.sleep(3)  # clients keep asking while it is down
        start_postgres()  # -w: returns once it accepts connections
        t_accepting = time.time()

        def resumed() -> Optional[float]:
            ok = [
                e["t1"]
                for e in self.events.refresh().requests
                if e["op"] == "transfer" and e["t0"] >= t_accepting and e["status"] == 201
            ]
            return min(ok) if ok else None  # fmt: skip

        t_first = wait_for("a transfer to succeed again", resumed, 60, every=0.1)
        time.sleep(2)
        t1 = time.time()
        settle(self.events, t1)
        window = self.events.between(t0, t1)
        down = [e for e in window if e["t0"] <= t_accepting and e["t1"] >= t_stopped]
        by_code = Counter(e.get("code") for e in window if e["status"] == 503)
        r.counts = {
            "seconds_down": round(t_accepting - t_stopped, 1),
            "while_down_by_status": statuses(down),
            "window_by_status": statuses(window),
            "503_codes": dict(by_code),
            "seconds_to_first_success": round(t_first - t_accepting, 2),
        }
        fivehundreds = [e for e in window if e["status"] == 500]
        r.check("no 500 (503 while down)", not fivehundreds)
        r.check("failures while down are 503s",
                all(e["status"] == 503 for e in window if failed(e)))  # fmt: skip
        r.check("success within 5 s of PostgreSQL accepting", t_first - t_accepting <= 5)
        r.check("no API restart",
                all(alive(p) and pid_of(h) == p for h, p in masters.items()))  # fmt: skip
        self.ledger_check(r)
        return r

    # 5 ----------------------------------------------------------------
    def restart_redis(self) -> Result:
        r = Result(5, "Redis restarted")
        t0 = time.time()
        kill_namespace(ns("redis"), signal.SIGTERM)
        wait_for("redis to stop", lambda: not namespace_pids("redis"), 15)
        t_down = time.time()
        time.sleep(5)  # jobs queued and logins attempted while Redis is gone

        # ...at least one login begun while it is down (they are slow: bcrypt).
        def login_began() -> bool:
            return any(a["t"] > t_down for a in self.events.refresh().acks["login_started"])

        wait_for("a login to start while Redis is down", login_began, 30, 0.1)
        start_redis()
        wait_for("redis", redis_ping, 30)
        t_up = time.time()
        settle(self.events, t_up)
        logins = [e for e in self.events.requests
                  if e["op"] == "login" and t_down <= e["t0"] <= t_up]  # fmt: skip
        ok, summary, counts = check_emails(time.time())
        full = self.events.refresh().between(t0, t_up)
        r.counts = {
            "seconds_down": round(t_up - t_down, 1),
            "logins_while_down": statuses(logins),
            "window_by_status": statuses(full),
            **counts,
        }
        r.notes.append(summary)
        r.check("logins sent while Redis was down answered 200 (throttling fails open)",
                bool(logins) and all(e["status"] == 200 for e in logins))  # fmt: skip
        r.check("no failures", not [e for e in full if failed(e)])
        r.check("every email job delivered (outbox re-sent what Redis lost)", ok)
        self.ledger_check(r)
        return r

    # 6 ----------------------------------------------------------------
    def cut_api2(self) -> Result:
        r = Result(6, "api2 cut off from db (its back link down)")
        before = server_stats()["api2"]
        in_flight, sent_before = int(before["scur"]), int(before["stot"])
        t_cut = time.time()
        run(*in_ns("api2", "ip", "link", "set", "back0", "down"))
        t_down = wait_server("api2", "DOWN", 20)
        sent_until_down = int(server_stats()["api2"]["stot"]) - sent_before
        time.sleep(2)
        run(*in_ns("api2", "ip", "link", "set", "back0", "up"))
        wait_server("api2", "UP", 60)
        t1 = time.time()
        settle(self.events, t1)
        window = self.events.between(t_cut, t1)
        failures = [e for e in window if failed(e)]
        five_hundreds = [e for e in failures if e["status"] != 503]
        exposed = in_flight + sent_until_down
        r.counts = {
            "seconds_to_out_of_rotation": round(t_down - t_cut, 2),
            "requests_on_api2_while_cut": exposed,
            "window_by_status": statuses(window),
            "failures_by_status": statuses(failures),
        }
        r.check("HAProxy drained api2 (its /ready failed)", t_down > t_cut)
        r.check("no 500 beyond the requests api2 held before it was drained",
                len(five_hundreds) <= exposed)  # fmt: skip
        self.ledger_check(r)
        return r

    # 7 ----------------------------------------------------------------
    def scale_out(self) -> Result:
        r = Result(7, "scale-out: api3 and worker3 join under load")
        add_host("api3")
        add_host("worker3")
        since = log_size("worker3")
        start_api("api3")
        start_worker("worker3")
        t_ready = wait_host_ready("api3")

        def api3_served() -> Optional[float]:
            times = [e["t1"] for e in self.events.refresh().requests if e.get("host") == "api3"]
            return min(times) if times else None

        t_traffic = wait_for("api3 to serve a client", api3_served, 60, every=0.1)
        wait_worker_ready("worker3", since)
        path = LOGS / "worker3.log"
        t_worker_ready = time.time()
        wait_for("worker3 to run a job",
                 lambda: "] received" in path.read_bytes()[since:].decode(errors="replace"),
                 60, every=0.1)  # fmt: skip
        t_worker_job = time.time()
        r.counts = {
            "api3_seconds_ready_to_first_client_request": round(max(0.0, t_traffic - t_ready), 2),
            "worker3_seconds_ready_to_first_job": round(t_worker_job - t_worker_ready, 2),
            "haproxy_api3": server_status("api3"),
        }
        r.check("api3 served clients within 5 s of being ready", t_traffic - t_ready <= 5)
        r.check("worker3 took a job within 5 s of consuming", t_worker_job - t_worker_ready <= 5)
        self.ledger_check(r)
        return r


READY_PROBE = """
import sys, time, httpx
url = sys.argv[1] + "/ready"
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if httpx.get(url, timeout=2).status_code == 200:
            print(time.time()); sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.05)
sys.exit(1)
"""


def start_load() -> Dict[str, Any]:
    if LOAD.exists():
        for child in LOAD.iterdir():
            child.unlink()
    LOAD.mkdir(parents=True, exist_ok=True)
    spawn("client", "loadgen", [str(VENV_BIN / "python"), str(Path(__file__).with_name(
        "loadgen.py")), "--base", LB_URL, "--out", str(LOAD), "--max-seconds", "540"])  # fmt: skip
    seed_path = LOAD / "seed.json"
    wait_for("the load generator's seed", lambda: seed_path.exists() or not alive(
        pid_of("loadgen")), 240, every=0.5)  # fmt: skip
    if not seed_path.exists():
        raise RuntimeError(f"the load generator died; see {LOGS / 'loadgen.log'}")
    return dict(json.loads(seed_path.read_text()))


def stop_load() -> None:
    (LOAD / "stop").write_text("")
    try:
        wait_for("the load generator to finish", lambda: (LOAD / "done").exists(), 90, 0.25)
    except RuntimeError as exc:
        log(str(exc))
        kill_namespace(ns("client"), signal.SIGKILL)


def run_drills(only: List[int]) -> int:
    if not (STATE / "lb" / "admin.sock").exists():
        log("the cluster is not up: run `deploy/cluster.sh up` first")
        return 2
    started = time.time()
    log("load: seeding through HAProxy")
    seed = start_load()
    events = Events()
    wait_load_progress(events)
    drills = Drills(events, seed)
    plan: List[Tuple[int, Callable[[], Result]]] = [
        (1, drills.kill_api1),
        (2, drills.rolling_restart),
        (3, drills.kill_worker1),
        (4, drills.restart_postgres),
        (5, drills.restart_redis),
        (6, drills.cut_api2),
        (7, drills.scale_out),
    ]
    results: List[Result] = []
    try:
        for number, drill in plan:
            if only and number not in only:
                continue
            log(f"drill {number}: {drill.__doc__ or drill.__name__}")
            try:
                result = drill()
            except Exception as exc:  # noqa: BLE001 - a drill that breaks is a failed drill
                result = Result(number, drill.__name__)
                result.notes.append(f"error: {type(exc).__name__}: {exc}")
                result.check("drill ran to the end", False)
            print(result.line(), flush=True)
            results.append(result)
            wait_load_progress(events)
    finally:
        stop_load()
    events.refresh()
    final = Result(0, "after the load stopped: all jobs delivered, ledger intact")
    ok, summary, counts = check_emails(time.time())
    final.counts = {"requests": len(events.requests), "by_status": statuses(events.requests),
                    **counts}  # fmt: skip
    final.check("every email job delivered", ok)
    drills.ledger_check(final)
    print(final.line(), flush=True)
    results.append(final)
    report = {
        "seconds": round(time.time() - started, 1),
        "drills": [
            {
                "drill": r.number,
                "name": r.name,
                "passed": r.passed,
                "counts": r.counts,
                "notes": r.notes,
                "checks": r.checks,
            }  # fmt: skip
            for r in results
        ],
    }
    (LOGS / "drill-report.json").write_text(json.dumps(report, indent=2))
    passed = sum(r.passed for r in results)
    log(f"{passed}/{len(results)} passed in {report['seconds']} s; report in "
        f"{LOGS / 'drill-report.json'}")  # fmt: skip
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(run_drills([int(n) for n in sys.argv[1:]]))
