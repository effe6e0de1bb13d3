"""`keel dev` / `make run`: the whole system on embedded defaults (PostgreSQL,
Redis and an SMTP sink where not configured), migrated, the API and a worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import FrameType
from typing import Dict, List, Optional, Tuple

from app.core.config import get_settings
from app.core.logging import configure_logging
from app.dev import embedded


class Shutdown(Exception):
    """SIGTERM/SIGINT received."""


def _raise_shutdown(signum: int, frame: Optional[FrameType]) -> None:
    raise Shutdown()


def prepare_environment() -> Dict[str, str]:
    """Environment for the child processes, embedded servers filling the gaps."""
    settings = get_settings()
    env = dict(os.environ)
    if not settings.database_url:
        env["DATABASE_URL"] = embedded.embedded_database_url(settings.data_dir)
        print(f"  database: embedded PostgreSQL in {settings.data_dir / 'pgdata'}")
    else:
        print("  database: DATABASE_URL")
    if not settings.redis_url:
        env["REDIS_URL"] = embedded.embedded_redis_url(settings.data_dir)
        print(f"  redis:    embedded Redis at {env['REDIS_URL']}")
    else:
        print("  redis:    REDIS_URL")
    if not settings.smtp_host:
        from app.dev.mailsink import embedded_mail_sink, mail_folder

        host, smtp_port = embedded_mail_sink(settings.data_dir).address
        env["SMTP_HOST"], env["SMTP_PORT"] = host, str(smtp_port)
        print(
            f"  smtp:     embedded sink on {host}:{smtp_port}, mail saved in "
            f"{mail_folder(settings.data_dir)}"
        )
    else:
        print("  smtp:     SMTP_HOST")
    return env


def uvicorn_command(port: int, loop: str) -> List[str]:
    """One uvicorn process of the API on 127.0.0.1:port (dev, tests, benches)."""
    options = ["--host", "127.0.0.1", "--port", str(port), "--loop", loop]
    return [sys.executable, "-m", "uvicorn", "app.main:app", *options]


def dev_processes(port: int) -> List[Tuple[str, List[str]]]:
    python = sys.executable
    return [
        ("api", uvicorn_command(port, get_settings().event_loop)),
        ("worker", [python, "-m", "app", "worker", "--concurrency", "2"]),
    ]


def ensure_model(env: Dict[str, str]) -> None:
    """Train a first model when none is registered, so predictions work at once."""
    from app.ml.registry import Registry

    model_dir = get_settings().resolved_model_dir
    if Registry(model_dir).versions():
        print(f"  models:   {model_dir}")
        return
    print(f"  models:   none in {model_dir}; training one")
    subprocess.run([sys.executable, "-m", "app", "train-model"], env=env, check=True)


def wait_for_http(url: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return False


def stop_children(children: List[Tuple[str, subprocess.Popen]], grace: float = 15.0) -> List[str]:
    """SIGTERM each child (graceful for uvicorn and Celery alike), wait,
    SIGKILL what is still running after `grace` seconds. Returns what did not
    stop cleanly, e.g. ["worker was killed"]."""
    problems: List[str] = []
    for _, proc in children:
        if proc.poll() is None:
            proc.terminate()
    for name, proc in children:
        try:
            code = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            problems.append(f"{name} was killed")
            continue
        # A child that saw our SIGTERM may report it as its exit status.
        if code not in (0, -signal.SIGTERM):
            problems.append(f"{name} exited with {code}")
    return problems


def run_dev(port: int = 8000) -> int:
    """Run until Ctrl-C or SIGTERM, then stop everything (exit 0 when all
    stopped cleanly). The children run in sessions of their own, so a Ctrl-C
    reaches this process alone and it stops them in order."""
    configure_logging("INFO")
    signal.signal(signal.SIGTERM, _raise_shutdown)
    signal.signal(signal.SIGINT, _raise_shutdown)
    children: List[Tuple[str, subprocess.Popen]] = []
    code = 1
    print("keel dev: starting")
    try:
        env = prepare_environment()
        subprocess.run([sys.executable, "-m", "app", "migrate"], env=env, check=True)
        ensure_model(env)
        for name, argv in dev_processes(port):
            children.append((name, subprocess.Popen(argv, env=env, start_new_session=True)))
        if not wait_for_http(f"http://127.0.0.1:{port}/health"):
            print("keel dev: the API did not become healthy", file=sys.stderr)
            return 1
        print(f"\nkeel is running: http://127.0.0.1:{port}  docs: http://127.0.0.1:{port}/docs")
        print("Press Ctrl-C to stop.\n")
        while True:
            for name, proc in children:
                exited = proc.poll()
                if exited is not None:
                    print(f"keel dev: {name} exited with {exited}", file=sys.stderr)
                    return exited or 1
            time.sleep(0.5)
    except Shutdown:
        code = 0
    except subprocess.CalledProcessError as exc:
        print(f"keel dev: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C while stopping must not abandon the children.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        problems = stop_children(children)
        embedded.stop_all()
        if code == 0:
            if problems:
                print(f"keel dev: stopped ({'; '.join(problems)})", file=sys.stderr)
                code = 1
            else:
                print("keel dev: stopped cleanly")
    return code
