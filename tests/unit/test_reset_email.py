"""The password-reset email states how long the token stays valid."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.auth.tasks import render_reset_body
from app.core.config import Settings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def body(remaining: timedelta) -> str:
    return render_reset_body(name="Ada", token="tok", expires_at=NOW + remaining, now=NOW)


def test_an_email_sent_at_once_says_the_documented_lifetime() -> None:
    lifetime = Settings().password_reset_token_minutes  # docs/api.md: 30
    # The job runs a moment after the token was made: a few ms are gone.
    sent = body(timedelta(minutes=lifetime) - timedelta(milliseconds=40))
    assert f"within {lifetime} minutes" in sent


@pytest.mark.parametrize(
    ("remaining", "said"),
    [
        (timedelta(minutes=29, seconds=31), 30),
        (timedelta(minutes=29, seconds=29), 29),  # a delayed job does not overstate
        (timedelta(minutes=25), 25),
        (timedelta(seconds=20), 1),  # never "within 0 minutes"
    ],
)
def test_the_stated_minutes_are_the_remaining_time_rounded(remaining: timedelta, said: int) -> None:
    assert f"within {said} minutes" in body(remaining)
