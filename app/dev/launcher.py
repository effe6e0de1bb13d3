"""`keel dev` / `make run`: the whole system on embedded defaults.

Starts what is not configured (PostgreSQL, Redis, an SMTP sink), applies
migrations, runs the API and a worker, and stops everything it started on
Ctrl-C.
"""

from __future__ import annotations

import logging
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

logger = logging.getLogger("keel.dev")


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
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        loop,
    ]


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


def run_dev(port: int = 8000) -> int:
    configure_logging("INFO")
    signal.signal(signal.SIGTERM, _raise_shutdown)
    children: List[Tuple[str, subprocess.Popen]] = []
    print("keel dev: starting")
    try:
        env = prepare_environment()
        subprocess.run([sys.executable, "-m", "app", "migrate"], env=env, check=True)
        ensure_model(env)
        for name, argv in dev_processes(port):
            children.append((name, subprocess.Popen(argv, env=env)))
        if not wait_for_http(f"http://127.0.0.1:{port}/health"):
            print("keel dev: the API did not become healthy", file=sys.stderr)
            return 1
        print(f"\nkeel is running: http://127.0.0.1:{port}  docs: http://127.0.0.1:{port}/docs")
        print("Press Ctrl-C to stop.\n")
        while True:
            for name, proc in children:
                code = proc.poll()
                if code is not None:
                    print(f"keel dev: {name} exited with {code}", file=sys.stderr)
                    return code or 1
            time.sleep(0.5)
    except (KeyboardInterrupt, Shutdown):
        print("\nkeel dev: stopping")
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"keel dev: {exc}", file=sys.stderr)
        return 1
    finally:
        for _, proc in children:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in children:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        embedded.stop_all()
