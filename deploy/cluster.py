"""A keel cluster on one Linux machine: hosts as network namespaces.

    deploy/cluster.sh up | drill [N ...] | down | status

Hosts (namespace `keel-<name>`), on two bridges this script creates and that
have no address on the machine itself and no route out (nothing leaves them):

    front 10.200.0.0/24: client .2, lb .10, api1 .11, api2 .12, api3 .13
    back  10.200.1.0/24: api1 .11, api2 .12, api3 .13, worker1 .21,
                         worker2 .22, worker3 .23, db .30, redis .31, mail .32

- lb: HAProxy with deploy/haproxy.cfg; api1..: `keel serve`; worker1..:
  `keel worker`; db: PostgreSQL + PgBouncer (deploy/pgbouncer.ini); redis:
  redis-server; mail: an aiosmtpd sink writing one .eml file per message;
  client: the load generator (deploy/loadgen.py).
- Every file lives under <repo>/.keel/cluster (logs under .keel/cluster/logs,
  kept by `down` for a post-mortem). The host's own PostgreSQL and Redis are
  never touched: ours listen on the namespaces' addresses and on sockets in
  that folder.
- `down` kills every process in the namespaces, deletes the namespaces (and
  with them their ends of the veth pairs), the host ends and the bridges,
  whatever state a failed run left. It is idempotent.

The drills (`drill`, see DRILLS) run under the load generator's steady mixed
load and print one line per drill with its counts; exit status 0 only if all
pass.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".keel" / "cluster"
LOGS = STATE / "logs"
MODELS = REPO / ".keel" / "cluster-models"  # kept across runs: training takes a while
VENV_BIN = REPO / ".venv" / "bin"
PG_BIN = Path("/usr/lib/postgresql/15/bin")

NS_PREFIX = "keel-"
FRONT_BRIDGE, BACK_BRIDGE = "keelfront0", "keelback0"
FRONT_NET, BACK_NET = "10.200.0", "10.200.1"
# host -> (front address suffix, back address suffix)
HOSTS: Dict[str, tuple] = {
    "client": (2, None),
    "lb": (10, None),
    "api1": (11, 11),
    "api2": (12, 12),
    "api3": (13, 13),
    "worker1": (None, 21),
    "worker2": (None, 22),
    "worker3": (None, 23),
    "db": (None, 30),
    "redis": (None, 31),
    "mail": (None, 32),
}
BASE_HOSTS = ["client", "lb", "db", "redis", "mail", "api1", "api2", "worker1", "worker2"]
DB_ADDR, REDIS_ADDR, MAIL_ADDR = f"{BACK_NET}.30", f"{BACK_NET}.31", f"{BACK_NET}.32"
LB_URL = f"http://{FRONT_NET}.10"
MAIL_PORT = 2525
# Each API host gets one CPU (affinity), like a small VM: `keel serve` sizes
# its worker pool from the CPUs it may use.
CPU_OF = {"api1": "0", "api2": "1", "api3": "0", "worker1": "1", "worker2": "0", "worker3": "1"}


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(*argv: str, check: bool = True, quiet: bool = False, **kwargs: Any) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    if not quiet and result.returncode != 0:
        log(f"(ignored) {' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def ns(host: str) -> str:
    return NS_PREFIX + host


def in_ns(host: str, *argv: str) -> List[str]:
    return ["ip", "netns", "exec", ns(host), *argv]


def wait_for(what: str, predicate: Callable[[], Any], seconds: float, every: float = 0.1) -> Any:
    """Poll until `predicate` returns something truthy; a hang guard, not a timing."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(every)


# --------------------------------------------------------------- resources


def remember(kind: str, name: str) -> None:
    """Record what we create, before creating it: `down` finds it even if the
    run dies right after."""
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / "resources").open("a") as out:
        out.write(f"{kind} {name}\n")


def remembered() -> List[tuple]:
    path = STATE / "resources"
    if not path.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines() if " " in line]


def existing_namespaces() -> List[str]:
    out = run("ip", "netns", "list", check=False, quiet=True)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def add_bridge(name: str) -> None:
    remember("bridge", name)
    if not link_exists(name):
        run("ip", "link", "add", name, "type", "bridge")
    run("ip", "link", "set", name, "up")


def add_host(host: str) -> None:
    front, back = HOSTS[host]
    remember("netns", ns(host))
    if ns(host) not in existing_namespaces():
        run("ip", "netns", "add", ns(host))
    run("ip", "-n", ns(host), "link", "set", "lo", "up")
    for suffix, bridge, net, prefix, inside in (
        (front, FRONT_BRIDGE, FRONT_NET, "kf-", "front0"),
        (back, BACK_BRIDGE, BACK_NET, "kb-", "back0"),
    ):
        if suffix is None:
            continue
        outside = prefix + host
        remember("link", outside)
        if not link_exists(outside):
            run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside,
                "netns", ns(host))  # fmt: skip
        run("ip", "link", "set", outside, "master", bridge, "up")
        run("ip", "-n", ns(host), "addr", "replace", f"{net}.{suffix}/24", "dev", inside)
        run("ip", "-n", ns(host), "link", "set", inside, "up")


def namespace_pids(host: str) -> List[int]:
    out = run("ip", "netns", "pids", ns(host), check=False, quiet=True)
    return [int(p) for p in out.split()]


def kill_namespace(name: str, sig: int = signal.SIGKILL) -> None:
    out = run("ip", "netns", "pids", name, check=False, quiet=True)
    for pid in (int(p) for p in out.split()):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def down() -> None:
    pgdata = STATE / "db" / "pgdata"
    if (pgdata / "postmaster.pid").exists() and ns("db") in existing_namespaces():
        # A clean stop (a SIGKILLed postmaster would leave shared memory).
        run(*pg(str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-w", "-t", "20", "-m", "fast",
                "stop"), check=False)  # fmt: skip
    # Only what this checkout recorded: the names are machine-wide, and
    # another checkout's cluster is not ours to remove.
    names = {n for kind, n in remembered() if kind == "netns"}
    for name in sorted(names):
        if name not in existing_namespaces():
            continue
        kill_namespace(name)
        try:
            wait_for(f"the processes of {name} to exit",
                     lambda n=name: not run("ip", "netns", "pids", n, check=False,
                                            quiet=True).split(), 15)  # fmt: skip
        except RuntimeError as exc:
            log(str(exc))
        run("ip", "netns", "del", name, check=False)
    links = {n for kind, n in remembered() if kind in ("link", "bridge")}
    for name in sorted(links, key=lambda n: n in (FRONT_BRIDGE, BACK_BRIDGE)):
        if link_exists(name):
            run("ip", "link", "del", name, check=False)
    # Everything but the logs (kept for a post-mortem until the next `up`).
    if STATE.exists():
        for child in STATE.iterdir():
            if child != LOGS:
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink()
    left = [n for n in names if n in existing_namespaces()]
    left += [n for n in links if link_exists(n)]
    if left:
        raise RuntimeError(f"down left these behind: {left}")
    log("down: no namespace, link, bridge or process of the cluster is left")


# --------------------------------------------------------------- processes


def secrets_file() -> Dict[str, str]:
    path = STATE / "secrets.json"
    if not path.exists():
        path.write_text(
            json.dumps(
                {
                    "secret_key": secrets.token_urlsafe(48),
                    "db_password": secrets.token_hex(16),
                    "metrics_token": secrets.token_hex(16),
                }
            )
        )
        path.chmod(0o600)
    return dict(json.loads(path.read_text()))


def spawn(host: str, name: str, argv: List[str], env: Optional[Dict[str, str]] = None,
          cpu: Optional[str] = None) -> int:  # fmt: skip
    """Start a long-running process in a namespace, detached from us."""
    LOGS.mkdir(parents=True, exist_ok=True)
    prefix = ["taskset", "-c", cpu] if cpu is not None else []
    with (LOGS / f"{name}.log").open("ab") as out:
        proc = subprocess.Popen(in_ns(host, *prefix, *argv), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=REPO,
                                start_new_session=True)  # fmt: skip
    (STATE / "pids").mkdir(exist_ok=True)
    (STATE / "pids" / name).write_text(str(proc.pid))
    return proc.pid


def pid_of(name: str) -> Optional[int]:
    path = STATE / "pids" / name
    return int(path.read_text()) if path.exists() else None


def alive(pid: Optional[int]) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our child, not reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def keel_env(host: str) -> Dict[str, str]:
    s = secrets_file()
    data_dir = STATE / "hosts" / host
    data_dir.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(data_dir),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        # Production's settings in every other respect (deploy/keel.env), but
        # production refuses the fake payment provider, and the load funds its
        # accounts through it (the drills need money to move, and no real
        # provider is reachable here).
        "ENVIRONMENT": "development",
        "PAYMENT_PROVIDER": "fake",
        "LOG_JSON": "true",
        "SECRET_KEY": s["secret_key"],
        "METRICS_TOKEN": s["metrics_token"],
        "DATABASE_URL": f"postgresql+asyncpg://keel:{s['db_password']}@{DB_ADDR}:6432/keel",
        "DB_PGBOUNCER": "true",
        "DB_POOL_SIZE": "5",
        "DB_MAX_OVERFLOW": "5",
        "REDIS_URL": f"redis://{REDIS_ADDR}:6379/0",
        "SMTP_HOST": MAIL_ADDR,
        "SMTP_PORT": str(MAIL_PORT),
        "MODEL_DIR": str(MODELS),
        "DATA_DIR": str(data_dir),
        # Short job timings so the drills see recovery in seconds.
        "JOB_PUBLISH_GRACE_SECONDS": "3",
        "JOB_SWEEP_INTERVAL_SECONDS": "1",
        "JOB_TIMEOUT_SECONDS": "8",
        "JOB_TIME_LIMIT_SECONDS": "10",
        "JOB_BACKOFF_BASE_SECONDS": "0.5",
        "JOB_BACKOFF_MAX_SECONDS": "2",
        "SMTP_TIMEOUT_SECONDS": "3",
        "WORKER_CONCURRENCY": "2",
    }


def start_api(host: str) -> None:
    env = keel_env(host)
    # Our own folder for the workers' metrics files (`keel serve` would make
    # one in /dev/shm, which a kill -9 leaves behind).
    metrics = STATE / "hosts" / host / "metrics"
    shutil.rmtree(metrics, ignore_errors=True)
    metrics.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    spawn(host, host, [str(VENV_BIN / "keel"), "serve", "--host", "0.0.0.0", "--port", "8000"],
          env=env, cpu=CPU_OF[host])  # fmt: skip


def start_worker(host: str) -> None:
    argv = [str(VENV_BIN / "keel"), "worker", "--hostname", f"{host}@%h", "--loglevel", "INFO"]
    spawn(host, host, argv, env=keel_env(host), cpu=CPU_OF[host])


def wait_worker_ready(host: str, since: int) -> None:
    """Celery prints '<name> ready.' once it consumes; look only at what this
    start wrote (the log is appended to across restarts)."""
    path = LOGS / f"{host}.log"

    def ready() -> bool:
        text = path.read_bytes()[since:].decode(errors="replace")
        return " ready." in text and f"{host}@" in text

    wait_for(f"{host} to consume", ready, 90)


def log_size(name: str) -> int:
    path = LOGS / f"{name}.log"
    return path.stat().st_size if path.exists() else 0


# --------------------------------------------------------------- HAProxy


def haproxy(command: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(STATE / "lb" / "admin.sock"))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode()


def server_stats() -> Dict[str, Dict[str, str]]:
    text = haproxy("show stat").lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {r["svname"]: r for r in rows if r["pxname"] == "keel_api"}


def server_status(name: str) -> str:
    return server_stats()[name]["status"]


def wait_server(name: str, status: str, seconds: float) -> float:
    wait_for(f"HAProxy to see {name} {status}",
             lambda: server_status(name).startswith(status), seconds, every=0.05)  # fmt: skip
    return time.time()


# --------------------------------------------------------------- up


def pg(*argv: str) -> List[str]:
    return in_ns("db", "runuser", "-u", "postgres", "--", *argv)


def psql(sql: str, database: str = "postgres") -> str:
    return run(*pg("psql", "-X", "-q", "-A", "-t", "-h", str(STATE / "db" / "run"),
                   "-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql))  # fmt: skip


def start_postgres() -> None:
    run(*pg(str(PG_BIN / "pg_ctl"), "-D", str(STATE / "db" / "pgdata"), "-w", "-t", "60",
            "-l", str(STATE / "db" / "postgres.log"), "start"))  # fmt: skip


def stop_postgres() -> None:
    run(*pg(str(PG_BIN / "pg_ctl"), "-D", str(STATE / "db" / "pgdata"), "-w", "-m", "fast",
            "stop"))  # fmt: skip


def setup_db() -> None:
    s = secrets_file()
    db = STATE / "db"
    (db / "run").mkdir(parents=True, exist_ok=True)
    shutil.chown(db, "postgres", "postgres")
    shutil.chown(db / "run", "postgres", "postgres")
    pgdata = db / "pgdata"
    run(*pg(str(PG_BIN / "initdb"), "-D", str(pgdata), "-U", "postgres", "-E", "UTF8",
            "--auth-local=trust", "--auth-host=scram-sha-256"))  # fmt: skip
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# keel cluster\n"
            f"listen_addresses = '{DB_ADDR}'\nport = 5432\n"
            f"unix_socket_directories = '{db / 'run'}'\n"
            "max_connections = 100\nshared_buffers = 128MB\n"
            # Segments under pgdata, not /dev/shm: nothing outside .keel.
            "dynamic_shared_memory_type = mmap\n"
        )
    with (pgdata / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {BACK_NET}.0/24 scram-sha-256\n")
    start_postgres()
    psql(f"CREATE ROLE keel LOGIN PASSWORD '{s['db_password']}'")
    psql("CREATE DATABASE keel OWNER keel")
    # PgBouncer refuses it in the startup packet (deploy/pgbouncer.ini).
    psql("ALTER ROLE keel SET statement_timeout = '30s'")

    config = (REPO / "deploy" / "pgbouncer.ini").read_text()
    config = config.replace("/etc/pgbouncer/", f"{db}/").replace(
        "/var/run/postgresql", str(db / "run")
    )
    config = config.replace("/var/log/postgresql/", f"{db}/")
    (db / "pgbouncer.ini").write_text(config)
    userlist = db / "userlist.txt"
    userlist.write_text(f'"keel" "{s["db_password"]}"\n')
    for path in (db / "pgbouncer.ini", userlist):
        shutil.chown(path, "postgres", "postgres")
        path.chmod(0o600)
    spawn("db", "pgbouncer", ["pgbouncer", "-u", "postgres", str(db / "pgbouncer.ini")])


def start_redis() -> None:
    folder = STATE / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    spawn("redis", "redis", ["redis-server", "--bind", REDIS_ADDR, "--port", "6379",
                             "--unixsocket", str(folder / "redis.sock"), "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no", "--dir", str(folder),
                             "--protected-mode", "no"])  # fmt: skip


def redis_ping() -> bool:
    path = STATE / "redis" / "redis.sock"
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_mail() -> None:
    (STATE / "mail").mkdir(parents=True, exist_ok=True)
    spawn("mail", "mail", [str(VENV_BIN / "python"), str(Path(__file__)), "_mailsink"])


def mailsink_main() -> None:
    """The `mail` host: aiosmtpd storing each message as a file."""
    sys.path.insert(0, str(REPO))
    from app.dev.mailsink import MailSink, StoringHandler

    sink = MailSink(StoringHandler(STATE / "mail", keep_in_memory=False), MAIL_ADDR, MAIL_PORT)
    sink.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    sink.stop()


def start_haproxy() -> None:
    lb = STATE / "lb"
    lb.mkdir(parents=True, exist_ok=True)
    config = (REPO / "deploy" / "haproxy.cfg").read_text().replace("/run/haproxy/", f"{lb}/")
    (lb / "haproxy.cfg").write_text(config)
    run("haproxy", "-c", "-q", "-f", str(lb / "haproxy.cfg"))
    spawn("lb", "haproxy", ["haproxy", "-f", str(lb / "haproxy.cfg")])
    wait_for("HAProxy's admin socket", lambda: (lb / "admin.sock").exists(), 20)


def host_env() -> Dict[str, str]:
    """For keel commands run on the machine itself (migrate, train-model):
    PostgreSQL through its socket in our state folder."""
    return {
        **os.environ,
        "DATABASE_URL": f"postgresql+asyncpg://keel@/keel?host={STATE / 'db' / 'run'}",
        "MODEL_DIR": str(MODELS),
        "DATA_DIR": str(STATE / "hosts" / "admin"),
    }


def up() -> None:
    if STATE.exists() and remembered():
        log("a previous cluster is still recorded: taking it down first")
        down()
    foreign = [n for n in existing_namespaces() if n.startswith(NS_PREFIX)]
    foreign += [b for b in (FRONT_BRIDGE, BACK_BRIDGE) if link_exists(b)]
    if foreign:
        raise RuntimeError(
            f"another cluster (another checkout?) holds {foreign}: run `down` there first"
        )
    shutil.rmtree(LOGS, ignore_errors=True)
    STATE.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log("network: bridges and namespaces")
    add_bridge(FRONT_BRIDGE)
    add_bridge(BACK_BRIDGE)
    for host in BASE_HOSTS:
        add_host(host)
    log("db: PostgreSQL and PgBouncer")
    setup_db()
    log("redis, mail")
    start_redis()
    start_mail()
    wait_for("redis", redis_ping, 30)
    log("migrations and the model")
    run(str(VENV_BIN / "keel"), "migrate", env=host_env())
    run(str(VENV_BIN / "keel"), "train-model", "--if-missing", "--model-dir", str(MODELS),
        env=host_env())  # fmt: skip
    log("lb: HAProxy")
    start_haproxy()
    log("api1, api2, worker1, worker2")
    for host in ("api1", "api2"):
        start_api(host)
    for host in ("worker1", "worker2"):
        start_worker(host)
    for host in ("api1", "api2"):
        wait_server(host, "UP", 120)
    for host in ("worker1", "worker2"):
        wait_worker_ready(host, 0)
    log(f"up: HAProxy at {LB_URL} (in namespace {ns('client')}); api1, api2 UP")


def status() -> None:
    for host in HOSTS:
        if ns(host) in existing_namespaces():
            print(f"{host:8} {len(namespace_pids(host))} processes")
    if (STATE / "lb" / "admin.sock").exists():
        for name, row in server_stats().items():
            sessions = f"sessions now {row['scur']} total {row['stot']}"
            print(f"haproxy {name:8} {row['status']:10} {sessions}")


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    command = argv[0]
    if command == "_mailsink":
        mailsink_main()
        return 0
    if command == "up":
        try:
            up()
        except BaseException:
            log(f"up failed; logs in {LOGS}; run `down` to clean up")
            raise
        return 0
    if command == "down":
        down()
        return 0
    if command == "status":
        status()
        return 0
    if command == "drill":
        print("drill: run deploy/cluster.sh drill (deploy/drills.py)", file=sys.stderr)
        return 2
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
