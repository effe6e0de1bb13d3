"""Pinning `keel serve` workers to CPUs, one worker per CPU.

Why: a prediction crosses two threads, the event loop and the inference
thread (app/ml/batcher.py), and each crossing wakes the other thread. When
the two run on different CPUs, each wake-up is an inter-processor interrupt:
on these VMs a loop→thread→loop round trip took ~95 µs across CPUs and ~35 µs
on one. A worker whose threads share one CPU also keeps its caches warm.
Measured with 2 workers on 2 CPUs (docs/ml.md): one client's p50 went from
0.32–0.34 to 0.285–0.29 ms, with the same throughput at 64 clients.

What is pinned: the worker's main thread, before the app starts, so the event
loop and the threads it starts (the inference thread, anyio's pool) run on
that CPU. Pools for CPU-heavy work that should use every CPU (password
hashing, CSV parsing) start their threads with `use_every_cpu`, so they do
not compete with their own event loop for one CPU.

When: `PIN_WORKERS=true` (the default) and no more workers than CPUs the
process may use; otherwise nothing is pinned. Only on Linux.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import FrozenSet, Iterable, Optional

logger = logging.getLogger(__name__)

# The CPUs this process may use, read at import: before any worker pins itself.
_ALLOWED: FrozenSet[int] = (
    frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()
)


def choose_cpu(workers: int, taken: Iterable[Optional[int]]) -> Optional[int]:
    """The CPU for a new worker: the one fewest live workers hold (`taken`;
    the lowest on a tie), or None when pinning does not apply (more workers
    than CPUs, or no affinity support). While gunicorn reloads, old and new
    workers live side by side and share CPUs until the old ones exit."""
    if not _ALLOWED or workers > len(_ALLOWED):
        return None
    held = Counter(cpu for cpu in taken if cpu is not None)
    return min(sorted(_ALLOWED), key=lambda cpu: held[cpu])


def pin_current_thread(cpu: int) -> None:
    """Run the calling thread (and the threads it starts from now on) on
    `cpu`. If the CPU is gone (offline, cpuset shrunk), stay unpinned."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        logger.warning("cannot pin to CPU %d; running unpinned", cpu, exc_info=True)


def use_every_cpu() -> None:
    """Let the calling thread run on every CPU the process was started with
    (a ThreadPoolExecutor initializer for CPU-heavy pools)."""
    if not _ALLOWED:
        return
    try:
        os.sched_setaffinity(0, _ALLOWED)
    except OSError:  # every one of them went away; raising would break the pool
        logger.warning("cannot widen the CPUs of this thread", exc_info=True)
