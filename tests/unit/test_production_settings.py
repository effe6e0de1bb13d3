"""Production refuses unsafe settings, all named in one error; payments are
off unless a real provider is configured (issue: free money in production)."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.config import DEFAULT_STRIPE_WEBHOOK_SECRET, Settings, UnsafeSettings

GOOD_KEY = "k" * 40
SERVERS = {
    "database_url": "postgresql+asyncpg://keel@db/keel",
    "redis_url": "redis://redis:6379/0",
    "smtp_host": "mail",
}


def production(**overrides: Any) -> Settings:
    values: dict = {"environment": "production", "secret_key": GOOD_KEY, **SERVERS}
    values.update(overrides)
    return Settings(**values)


def refusal(settings: Settings) -> str:
    with pytest.raises(UnsafeSettings) as raised:
        settings.check_production_safety()
    return str(raised.value)


def test_production_without_a_provider_starts_with_payments_disabled() -> None:
    settings = production()
    settings.check_production_safety()
    assert settings.active_payment_provider is None


def test_development_and_test_keep_the_fake_provider_by_default() -> None:
    for environment in ("development", "test"):
        settings = Settings(environment=environment)
        assert settings.active_payment_provider == "fake"
        settings.check_production_safety()


def test_empty_payment_provider_means_unset() -> None:
    assert production(payment_provider="").active_payment_provider is None


def test_fake_provider_in_production_is_refused_naming_the_variable() -> None:
    assert "PAYMENT_PROVIDER" in refusal(production(payment_provider="fake"))


def test_stripe_without_api_key_is_refused_naming_it() -> None:
    message = refusal(production(payment_provider="stripe", stripe_webhook_secret="whsec_real"))
    assert "STRIPE_API_KEY" in message
    assert "STRIPE_WEBHOOK_SECRET" not in message


@pytest.mark.parametrize("secret", [None, "", DEFAULT_STRIPE_WEBHOOK_SECRET])
def test_stripe_with_missing_or_default_webhook_secret_is_refused(secret: Any) -> None:
    overrides: dict = {"payment_provider": "stripe", "stripe_api_key": "sk_live_x"}
    if secret is not None:
        overrides["stripe_webhook_secret"] = secret
    message = refusal(production(**overrides))
    assert "STRIPE_WEBHOOK_SECRET" in message
    assert "STRIPE_API_KEY" not in message


def test_stripe_fully_configured_starts() -> None:
    settings = production(
        payment_provider="stripe", stripe_api_key="sk_live_x", stripe_webhook_secret="whsec_real"
    )
    settings.check_production_safety()
    assert settings.active_payment_provider == "stripe"


def test_every_unsafe_setting_is_reported_at_once() -> None:
    # (the test run's own DATABASE_URL and REDIS_URL are in the environment)
    settings = Settings(
        environment="production", payment_provider="stripe", database_url="", redis_url=""
    )
    with pytest.raises(UnsafeSettings) as raised:
        settings.check_production_safety()
    message = str(raised.value)
    names = ("DATABASE_URL", "REDIS_URL", "SMTP_HOST", "SECRET_KEY", "STRIPE_API_KEY")
    for name in (*names, "STRIPE_WEBHOOK_SECRET"):
        assert name in message
    assert len(raised.value.problems) == 6
    # Still a RuntimeError: callers that caught the old error keep working.
    assert isinstance(raised.value, RuntimeError)


@pytest.mark.parametrize("setting", sorted(SERVERS))
def test_production_without_a_server_is_refused_naming_it(setting: str) -> None:
    """Unset means an embedded development server, which production images
    do not install: a production process must not start without its servers."""
    message = refusal(production(**{setting: ""}))
    assert setting.upper() in message
    assert all(other.upper() not in message for other in SERVERS if other != setting)


def test_default_secret_key_and_fake_provider_are_both_named() -> None:
    message = refusal(Settings(environment="production", payment_provider="fake"))
    assert "SECRET_KEY" in message and "PAYMENT_PROVIDER" in message


def test_production_without_metrics_token_or_provider_warns_at_startup(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="app.core.config"):
        production().check_production_safety()
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "METRICS_TOKEN" in warnings and "404" in warnings
    assert "PAYMENT_PROVIDER" in warnings and "disabled" in warnings
    caplog.clear()
    with caplog.at_level("WARNING", logger="app.core.config"):
        production(metrics_token="t" * 32).check_production_safety()
    assert "METRICS_TOKEN" not in " ".join(r.getMessage() for r in caplog.records)


def test_empty_variables_from_a_compose_file_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """`${PAYMENT_PROVIDER:-}` in a compose file arrives as an empty string."""
    for name in ("PAYMENT_PROVIDER", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "METRICS_TOKEN"):
        monkeypatch.setenv(name, "")
    settings = production()
    settings.check_production_safety()
    assert settings.active_payment_provider is None and settings.metrics_token is None
    monkeypatch.setenv("PAYMENT_PROVIDER", "stripe")
    message = refusal(production())
    assert "STRIPE_API_KEY" in message and "STRIPE_WEBHOOK_SECRET" in message
