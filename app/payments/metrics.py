"""Payment metrics (default prometheus registry, exposed by /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

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
