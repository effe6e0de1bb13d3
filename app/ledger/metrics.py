"""Ledger metrics (default prometheus registry, exposed by /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

TRANSFERS = Counter(
    "keel_transfers_total",
    "Transfer requests by outcome (created, replayed, or the error code)",
    ["outcome"],
)
