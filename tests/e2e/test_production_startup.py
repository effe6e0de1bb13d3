"""ENVIRONMENT=production as a fresh process: unsafe settings stop every
entry point (API server, `keel serve`, `keel worker`) with a non-zero exit
and one message naming every unsafe variable; a safe configuration without a
payment provider starts with payments disabled and /metrics behind its token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any, Dict, List

import httpx
import pytest

from app.core.config import REPO_ROOT
from app.dev.launcher import uvicorn_command
from tests.e2e.conftest import free_port, start_server, stop_process

GOOD_SECRET = "e2e-production-secret-key-0123456789abcdef"
METRICS_TOKEN = "e2e-metrics-token-0123456789"
# Variables a developer's shell or the test run may hold that would change the outcome.
_CLEARED = ("SECRET_KEY", "PAYMENT_PROVIDER", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET")


def production_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED and k != "METRICS_TOKEN"}
    # A mail server is named (nothing is sent in these tests); the database
    # and Redis are the run's, from the environment.
    env.update({"ENVIRONMENT": "production", "PYTHONUNBUFFERED": "1", "SMTP_HOST": "127.0.0.1"})
    env.update(extra)
    return env


def run(command: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    """Run to completion; a process that does not refuse is killed with its
    children (gunicorn and Celery fork) when the hang guard expires."""
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"{command[2:4]} did not refuse to start: {stderr[-2000:]}") from None
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


KEEL = [sys.executable, "-m", "app"]


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_keel_refuses_unsafe_production_settings_naming_all_of_them(command: str) -> None:
    argv = KEEL + [command] + (["--port", str(free_port())] if command == "serve" else [])
    result = run(argv, production_env(PAYMENT_PROVIDER="fake"))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "SECRET_KEY" in output and "PAYMENT_PROVIDER" in output, output[-2000:]
    assert "Traceback" not in output, output[-2000:]


@pytest.mark.parametrize(
    "extra, names",
    [
        ({"SECRET_KEY": GOOD_SECRET, "PAYMENT_PROVIDER": "fake"}, ["PAYMENT_PROVIDER"]),
        (
            {"SECRET_KEY": GOOD_SECRET, "PAYMENT_PROVIDER": "stripe"},
            ["STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET"],
        ),
        (
            {
                "SECRET_KEY": GOOD_SECRET,
                "PAYMENT_PROVIDER": "stripe",
                "STRIPE_API_KEY": "sk_live_x",
                "STRIPE_WEBHOOK_SECRET": "whsec_dev_only_change_me",
            },
            ["STRIPE_WEBHOOK_SECRET"],
        ),
    ],
)
def test_keel_serve_refuses_each_unsafe_payment_setting(
    extra: Dict[str, str], names: List[str]
) -> None:
    result = run(KEEL + ["serve", "--port", str(free_port())], production_env(**extra))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    for name in names:
        assert name in output, output[-2000:]
    assert "Traceback" not in output


def test_the_asgi_app_refuses_to_start_under_uvicorn(committed_db: Any) -> None:
    """`uvicorn app.main:app` has no `keel` in front: the lifespan refuses."""
    result = run(uvicorn_command(free_port(), "asyncio"), production_env(PAYMENT_PROVIDER="fake"))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "PAYMENT_PROVIDER" in output and "SECRET_KEY" in output, output[-2000:]


def test_production_without_a_provider_serves_with_payments_disabled(committed_db: Any) -> None:
    proc, base = start_server(production_env(SECRET_KEY=GOOD_SECRET, METRICS_TOKEN=METRICS_TOKEN))
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            email = "prod-e2e@example.com"
            created = http.post(
                "/api/users", json={"email": email, "password": "password-1", "name": "P"}
            )
            assert created.status_code == 201, created.text
            token = http.post("/token", data={"username": email, "password": "password-1"})
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            account = http.post("/api/accounts", json={"currency": "USD"}, headers=headers)
            assert account.status_code == 201
            account_id = account.json()["id"]

            paid = http.post(
                "/api/pay", json={"amount": 99_999_999, "account_id": account_id}, headers=headers
            )
            assert paid.status_code == 503 and paid.json()["code"] == "payments_disabled"
            assert int(paid.headers["Retry-After"]) >= 1
            hooked = http.post("/api/payments/webhook", content=b"{}")
            assert hooked.status_code == 503 and hooked.json()["code"] == "payments_disabled"
            balance = http.get(f"/api/accounts/{account_id}", headers=headers).json()["balance"]
            assert balance == "0.00"

            assert http.get("/metrics").status_code == 401
            wrong = http.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            scraped = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert scraped.status_code == 200
            assert "keel_http_requests_total" in scraped.text
    finally:
        stop_process(proc)
