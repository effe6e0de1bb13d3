"""Imports every domain's models so Base.metadata is complete (Alembic, tests)."""

from app.admin.models import AuditRecord
from app.auth.models import PasswordResetToken, RefreshToken
from app.core.db import Base
from app.idempotency.models import IdempotencyKey
from app.jobs.models import Job
from app.ledger.models import Account, LedgerEntry, Transfer
from app.payments.models import Payment, PaymentEvent
from app.posts.models import Post
from app.users.models import User

__all__ = [
    "Account",
    "AuditRecord",
    "Base",
    "IdempotencyKey",
    "Job",
    "LedgerEntry",
    "PasswordResetToken",
    "Payment",
    "PaymentEvent",
    "Post",
    "RefreshToken",
    "Transfer",
    "User",
]
