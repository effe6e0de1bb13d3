"""Money metrics (default prometheus registry, exposed by /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

TRANSFERS = Counter(
    "keel_transfers_total",
    "Transfer requests by outcome (created, replayed, or the error code)",
    ["outcome"],
)
TRANSACTION_RETRIES = Counter(
    "keel_ledger_transaction_retries_total",
    "Money transactions rolled back and run again after a deadlock or serialization failure",
)
PAYMENTS = Counter(
    "keel_payments_total",
    "Top-up requests by outcome (succeeded, replayed, declined, provider_error)",
    ["outcome"],
)
WEBHOOK_EVENTS = Counter(
    "keel_payment_webhook_events_total",
    "Provider webhook deliveries by result (applied, duplicate, invalid_signature)",
    ["result"],
)
