"""Idempotency keys, shared by every domain whose POSTs may be retried
(ledger transfers, payment top-ups): claim a key in the transaction that does
the work, replay the first response after."""
