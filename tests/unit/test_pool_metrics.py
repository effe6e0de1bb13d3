"""The pool gauges are read at scrape time only (no I/O: the pool is never touched)."""

from __future__ import annotations

import os
from typing import List

import pytest
from prometheus_client import CollectorRegistry


def test_registering_the_pool_collector_does_not_read_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Registration happens at import time, outside any event loop: reading an
    # asyncio pool there failed on Python 3.9 once a test had configured one.
    from app.core.db import db
    from app.ops.metrics import PoolCollector

    reads: List[int] = []
    monkeypatch.setattr(db, "pool_status", lambda: reads.append(1))
    registry = CollectorRegistry(auto_describe=True)  # as the default registry
    registry.register(PoolCollector())
    assert reads == []
    monkeypatch.setattr(db, "pool_status", lambda: {"size": 5, "checked_out": 2, "overflow": 0})
    assert registry.get_sample_value("keel_db_pool_checked_out", {"pid": str(os.getpid())}) == 2
