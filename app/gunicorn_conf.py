"""gunicorn settings used by `keel serve` (`-c python:app.gunicorn_conf`).

Startup: the master imports the app once (`preload_app`) and the workers fork
from it, instead of each worker importing everything itself (measured: about
half the CPU time from spawn to the first answered prediction with two
workers). `keel serve` runs that import with the garbage collector off (it
finds nothing to free among the objects an import creates: ~15% of import
time); `when_ready` turns it back on and freezes what the import built, so
neither the master nor the forked workers scan it again (which would also
copy the shared pages). Each worker still runs the app's lifespan itself:
model, batcher thread and connection pools are per process.

CPU pinning: with PIN_WORKERS (the default) and no more workers than CPUs,
each worker runs on a CPU of its own, chosen in the master so that a
restarted worker takes the CPU its predecessor left (app/core/cpu.py says
why).

Connection balancing: with the asyncio event loop, the workers publish how
many connections they hold on a board in shared memory created here, and
the busier ones leave new connections to the others (app/core/balance.py).
"""

from __future__ import annotations

import gc
import os
from typing import Any

from prometheus_client import multiprocess
from uvicorn.workers import UvicornWorker

from app.cli import memory_backed_dir
from app.core import balance, cpu
from app.core.config import get_settings
from app.core.http_protocol import HTTP_PROTOCOL

_settings = get_settings()

bind = os.environ.get("KEEL_BIND", f"{_settings.host}:{_settings.port}")
workers = int(os.environ.get("KEEL_WORKERS") or _settings.web_concurrency or (os.cpu_count() or 1))
worker_class = "app.gunicorn_conf.KeelUvicornWorker"
preload_app = True
# SIGTERM: stop accepting, let in-flight requests finish for up to 30 s.
graceful_timeout = 30
timeout = 60
keepalive = 5
accesslog = None
worker_tmp_dir = memory_backed_dir()  # the heartbeat file: see memory_backed_dir


# Before any fork: every worker shares this memory.
_board = balance.ConnectionBoard()
_loop = balance.LOOP if _settings.event_loop == "asyncio" else _settings.event_loop


class KeelUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": _loop, "http": HTTP_PROTOCOL}


def when_ready(server: Any) -> None:
    """The app is imported and the sockets are bound; workers fork next."""
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # once here, not on each worker's first request
    gc.enable()  # `keel serve` disabled it for the import
    gc.freeze()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics. (Imported
    at the top: importing it here, inside the SIGCHLD handler, could re-enter
    an import already under way when two workers exit together.)"""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
    if worker.keel_slot is not None:
        _board.release(worker.keel_slot)  # if it died without closing its listener


def pre_fork(server: Any, worker: Any) -> None:
    """In the master: the CPU the new worker will run on (None: not pinned)
    and its slot on the connection board (None: board full, not balanced)."""
    worker.keel_cpu = None
    worker.keel_slot = balance.free_slot(
        _board, (getattr(other, "keel_slot", None) for other in server.WORKERS.values())
    )
    if _settings.pin_workers:
        live = [getattr(other, "keel_cpu", None) for other in server.WORKERS.values()]
        worker.keel_cpu = cpu.choose_cpu(server.num_workers, live)


def post_fork(server: Any, worker: Any) -> None:
    """In the new worker, before the app starts."""
    if worker.keel_cpu is not None:
        cpu.pin_current_thread(worker.keel_cpu)
    if worker.keel_slot is not None:
        balance.join(_board, worker.keel_slot)
