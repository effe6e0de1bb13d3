"""Errors of the payments domain (codes and statuses in docs/api.md)."""

from __future__ import annotations

from app.core.errors import (
    AppError,
    BadRequest,
    ServiceUnavailable,
    UnprocessableEntity,
)


class PaymentDeclined(AppError):
    status_code = 402
    code = "payment_declined"
    message = "The payment was declined"


class PaymentProviderError(AppError):
    status_code = 502
    code = "payment_provider_error"
    message = "The payment provider did not answer; nothing was charged to the account, retry"


class PaymentsDisabled(ServiceUnavailable):
    code = "payments_disabled"
    message = "Payments are disabled: no payment provider is configured"
    # A configuration state, not a blip: retrying within the hour is pointless.
    RETRY_AFTER_SECONDS = 3600

    def __init__(self) -> None:
        super().__init__(retry_after=self.RETRY_AFTER_SECONDS)


class CurrencyNotPayable(UnprocessableEntity):
    def __init__(self, currency: str) -> None:
        super().__init__(
            detail=[
                {
                    "type": "currency_not_payable",
                    "loc": ["body", "account_id"],
                    "msg": f"Top-ups in minor units are not supported for {currency} accounts",
                    "input": None,
                }
            ]
        )


class InvalidSignature(BadRequest):
    code = "invalid_signature"
    message = "Invalid webhook signature"


class InvalidEvent(BadRequest):
    code = "invalid_event"
    message = "Malformed webhook event"
