"""Run Alembic migrations programmatically (used by `keel migrate`, dev, tests)."""

from __future__ import annotations

from typing import Optional

from alembic import command
from alembic.config import Config

from app.core.config import REPO_ROOT


def alembic_config(url: Optional[str] = None) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    if url:
        config.attributes["url"] = url
    return config


def upgrade(url: Optional[str] = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: Optional[str] = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
