"""Worker CPU pinning (app/core/cpu.py): which CPU a new worker gets, and
that CPU-heavy pools escape the pin of the event-loop thread."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, FrozenSet

import pytest

from app.core import cpu
from app.core.config import REPO_ROOT

ALLOWED: FrozenSet[int] = (
    frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()
)
needs_two_cpus = pytest.mark.skipif(len(ALLOWED) < 2, reason="needs CPU affinity and 2 CPUs")


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "_ALLOWED", frozenset({0, 1, 2, 3}))


def test_workers_take_free_cpus_in_order(four_cpus: None) -> None:
    assert cpu.choose_cpu(4, []) == 0
    assert cpu.choose_cpu(4, [0, 1]) == 2
    # a restarted worker takes the CPU its predecessor left
    assert cpu.choose_cpu(4, [0, 2, 3]) == 1


def test_no_pinning_with_more_workers_than_cpus(four_cpus: None) -> None:
    assert cpu.choose_cpu(5, []) is None


def test_during_a_reload_new_workers_spread_over_the_cpus(four_cpus: None) -> None:
    # gunicorn's HUP forks the new workers before the old ones exit
    taken = [0, 1, 2, 3]
    for expected in (0, 1, 2, 3):
        chosen = cpu.choose_cpu(4, taken)
        assert chosen == expected
        taken.append(chosen)
    assert cpu.choose_cpu(4, [None, 0, 1, 2]) == 3  # unpinned workers hold nothing


@needs_two_cpus
def test_a_cpu_that_cannot_be_used_leaves_the_worker_unpinned() -> None:
    impossible = max(ALLOWED or {0}) + 4096
    seen = {}

    def worker_thread() -> None:
        cpu.pin_current_thread(impossible)  # logs, does not raise
        seen["cpus"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join(10)
    assert seen["cpus"] == set(ALLOWED)


@needs_two_cpus
def test_threads_inherit_the_pin_unless_their_pool_uses_every_cpu() -> None:
    seen: Dict[str, Any] = {}
    target = min(ALLOWED)

    def pinned_loop_thread() -> None:
        cpu.pin_current_thread(target)
        seen["self"] = os.sched_getaffinity(0)
        with ThreadPoolExecutor(1) as plain:
            seen["plain"] = plain.submit(os.sched_getaffinity, 0).result()
        with ThreadPoolExecutor(1, initializer=cpu.use_every_cpu) as wide:
            seen["wide"] = wide.submit(os.sched_getaffinity, 0).result()

    thread = threading.Thread(target=pinned_loop_thread)
    thread.start()
    thread.join(10)
    assert seen == {"self": {target}, "plain": {target}, "wide": set(ALLOWED)}
    assert os.sched_getaffinity(0) == ALLOWED  # only that thread was pinned


@needs_two_cpus
def test_hashing_and_csv_pools_use_every_cpu_from_a_pinned_worker() -> None:
    """In a fresh process (the pools start their threads on first use), pin the
    main thread as a worker's is, then ask each pool's thread where it may run."""
    script = """
import os
from app.core import cpu, security
from app.ingestion import csv_summary, service
cpu.pin_current_thread(min(os.sched_getaffinity(0)))
for pool in (security._hash_pool, service._parse_executor(), csv_summary._work_pool()):
    print(",".join(map(str, sorted(pool.submit(os.sched_getaffinity, 0).result()))))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == [",".join(map(str, sorted(ALLOWED)))] * 3
