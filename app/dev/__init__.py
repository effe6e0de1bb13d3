"""The embedded defaults behind `keel dev` / `make run` (see embedded.py).

`register_embedded_defaults` is called by the entry points (the `keel`
command, the FastAPI app, the Celery app, Alembic's env.py): it tells core
what an unset DATABASE_URL / REDIS_URL means, so core never imports this
package.
"""

from __future__ import annotations

from app.core.config import Settings


def _database_url(settings: Settings) -> str:
    from app.dev.embedded import embedded_database_url

    return embedded_database_url(settings.data_dir)


def _redis_url(settings: Settings) -> str:
    from app.dev.embedded import embedded_redis_url

    return embedded_redis_url(settings.data_dir)


def register_embedded_defaults() -> None:
    """Unset DATABASE_URL / REDIS_URL start the embedded servers on first use."""
    from app.core.db import set_default_database_url
    from app.core.redis import set_default_redis_url

    set_default_database_url(_database_url)
    set_default_redis_url(_redis_url)
