"""Settings: the only place that reads environment variables."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import List, Literal, Optional

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "dev-insecure-secret-key-change-me-0123456789"
# Public (it is in this file): fine for development and tests, refused in production.
DEFAULT_STRIPE_WEBHOOK_SECRET = "whsec_dev_only_change_me"
REPO_ROOT = Path(__file__).resolve().parents[2]

logger = logging.getLogger(__name__)


class UnsafeSettings(RuntimeError):
    """Production settings that must not run; `problems` names every one."""

    def __init__(self, problems: List[str]) -> None:
        self.problems = problems
        super().__init__(
            "refusing to run in production with unsafe settings: " + "; ".join(problems)
        )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: str = Field("development", pattern="^(development|test|production)$")
    secret_key: str = DEFAULT_SECRET_KEY
    jwt_algorithm: str = Field("HS256", pattern="^HS(256|384|512)$")
    access_token_minutes: int = Field(15, ge=1)
    refresh_token_days: int = Field(14, ge=1)
    bcrypt_rounds: int = Field(12, ge=4, le=16)
    # How long a process may trust a cached account standing (active, not
    # revoked) for identity-only endpoints; 0 disables the cache.
    auth_cache_seconds: float = Field(2.0, ge=0)

    # Unset means "use the embedded defaults" (see app/dev).
    database_url: Optional[str] = None
    redis_url: Optional[str] = None
    # A Redis that does not connect or answer within this counts as down: no request waits on it.
    redis_timeout_seconds: float = Field(0.5, gt=0)
    smtp_host: Optional[str] = None
    smtp_port: Optional[int] = None
    smtp_username: Optional[str] = None
    smtp_password: Optional[str] = None
    smtp_use_tls: bool = False
    mail_from: str = "keel <no-reply@keel.local>"
    smtp_timeout_seconds: float = Field(10.0, gt=0)

    # Background jobs (app/jobs, app/worker.py).
    worker_concurrency: Optional[int] = Field(None, ge=1)
    job_max_retries: int = Field(3, ge=0)
    job_backoff_base_seconds: float = Field(2.0, gt=0)
    job_backoff_max_seconds: float = Field(600.0, gt=0)
    job_max_lost_deliveries: int = Field(3, ge=1)
    job_timeout_seconds: float = Field(30.0, gt=0)
    job_time_limit_seconds: int = Field(60, ge=1)
    job_publish_grace_seconds: float = Field(30.0, gt=0)
    job_sweep_interval_seconds: float = Field(5.0, gt=0)
    job_sweep_batch: int = Field(500, ge=1)

    password_reset_token_minutes: int = Field(30, ge=1)
    password_reset_max_requests: int = Field(5, ge=1)
    password_reset_window_seconds: int = Field(900, ge=1)

    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(10, ge=0)
    db_pool_timeout: float = Field(5.0, gt=0)
    db_pool_recycle: int = Field(1800, ge=-1)
    # Pre-ping lets the pool recover by itself after a database restart. A ping
    # costs round trips, so only connections idle longer than
    # `db_pre_ping_idle_seconds` are pinged (0: every checkout), never under load.
    db_pool_pre_ping: bool = True
    db_pre_ping_idle_seconds: float = Field(1.0, ge=0)
    db_connect_timeout: float = Field(3.0, gt=0)
    db_statement_timeout_ms: int = Field(30_000, ge=0)
    # Behind PgBouncer in transaction mode (deploy/pgbouncer.ini): each
    # transaction may run on a different server connection, and PgBouncer
    # 1.18 does not track prepared statements, so only unnamed, uncached
    # statements are used (app/core/db.py). It also refuses session settings
    # in the startup packet: set statement_timeout on the database role.
    db_pgbouncer: bool = False

    data_dir: Path = REPO_ROOT / ".keel"
    model_dir: Optional[Path] = None
    # Model serving (app/ml): rows per inference call, queued rows before 503,
    # seconds between checks of the shared active-model pointer.
    ml_max_batch_rows: int = Field(64, ge=1, le=4096)
    ml_max_queue_rows: int = Field(4096, ge=1)
    ml_watch_interval: float = Field(1.0, ge=0)
    ml_intra_op_threads: int = Field(1, ge=1, le=64)
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1)
    max_body_bytes: int = Field(1024 * 1024, ge=1)
    upload_read_timeout: float = Field(30.0, gt=0)

    cors_origins: List[str] = []
    log_level: str = "INFO"
    log_json: Optional[bool] = None
    # `keel serve` workers; default: the CPUs the process may use (app/core/cpu_count.py).
    web_concurrency: Optional[int] = Field(None, ge=1)
    # uvicorn's `loop` setting. asyncio by default: on a saturated worker uvloop
    # serves more requests but answers some connections far later (bench/README.md).
    event_loop: Literal["asyncio", "uvloop", "auto"] = "asyncio"
    host: str = "127.0.0.1"
    port: int = 8000

    login_max_failures: int = Field(5, ge=1)
    login_lockout_seconds: int = Field(300, ge=1)

    # Unset: `fake` in development and test; in production payments are
    # disabled (503 `payments_disabled`) until a real provider is configured.
    payment_provider: Optional[Literal["fake", "stripe"]] = None
    stripe_api_key: Optional[str] = None
    stripe_webhook_secret: str = DEFAULT_STRIPE_WEBHOOK_SECRET
    # The saved payment method top-ups are charged to (Stripe test card by default).
    stripe_payment_method: str = "pm_card_visa"
    payment_timeout_seconds: float = Field(10.0, gt=0)

    # Bearer token /metrics requires when set. Unset: open outside
    # production, not served (404) in production.
    metrics_token: Optional[str] = None

    @field_validator("payment_provider", "metrics_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str) and not value.startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir or (self.data_dir / "models")

    @property
    def json_logs(self) -> bool:
        return self.is_production if self.log_json is None else self.log_json

    @property
    def active_payment_provider(self) -> Optional[str]:
        """The provider payments go through; None means payments are disabled."""
        if self.payment_provider is None and not self.is_production:
            return "fake"
        return self.payment_provider

    def production_problems(self) -> List[str]:
        """Every setting production must not run with (empty outside production)."""
        if not self.is_production:
            return []
        problems = []
        # Unset means "start an embedded server" (app/dev): a development
        # convenience that production images do not even install.
        for name, value in (
            ("DATABASE_URL", self.database_url),
            ("REDIS_URL", self.redis_url),
            ("SMTP_HOST", self.smtp_host),
        ):
            if not value:
                problems.append(f"{name} must be set (unset starts an embedded development server)")
        if self.secret_key == DEFAULT_SECRET_KEY or len(self.secret_key) < 32:
            problems.append("SECRET_KEY must be a random value of at least 32 characters")
        if self.payment_provider == "fake":
            problems.append(
                "PAYMENT_PROVIDER=fake credits money without charging anyone: set "
                "PAYMENT_PROVIDER=stripe, or leave it unset to disable payments"
            )
        if self.payment_provider == "stripe":
            if not self.stripe_api_key:
                problems.append("STRIPE_API_KEY must be set when PAYMENT_PROVIDER=stripe")
            if self.stripe_webhook_secret in ("", DEFAULT_STRIPE_WEBHOOK_SECRET):
                problems.append(
                    "STRIPE_WEBHOOK_SECRET must be set to the endpoint's signing secret "
                    "when PAYMENT_PROVIDER=stripe (the default is public)"
                )
        return problems

    def check_production_safety(self) -> None:
        """Refuse to run production with unsafe settings, naming all of them
        at once; warn about what production runs without."""
        problems = self.production_problems()
        if problems:
            raise UnsafeSettings(problems)
        if self.is_production and self.payment_provider is None:
            logger.warning("PAYMENT_PROVIDER is not set: payments are disabled (503)")
        if self.is_production and not self.metrics_token:
            logger.warning("METRICS_TOKEN is not set: /metrics is not served (404)")


@lru_cache
def get_settings() -> Settings:
    return Settings()
