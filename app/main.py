"""The FastAPI application: routers, middleware, error handlers, lifespan."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import AsyncIterator, Optional

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.admin.console import mount_admin
from app.auth.principal import cancel_standing_loads
from app.auth.router import router as auth_router
from app.core.config import Settings, get_settings
from app.core.db import db
from app.core.docs import install_docs
from app.core.errors import install_error_handlers
from app.core.logging import configure_logging
from app.core.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from app.core.redis import close_redis
from app.core.responses import ORJSONUTCResponse
from app.dev import register_embedded_defaults
from app.emails.router import router as emails_router
from app.ingestion.router import UPLOAD_LIMIT_CODES, upload_body_limits
from app.ingestion.router import router as ingestion_router
from app.jobs.router import router as jobs_router
from app.ledger.router import router as ledger_router
from app.ml.router import router as ml_router
from app.ml.serving import start_model_serving, stop_model_serving
from app.ops.metrics import MetricsMiddleware
from app.ops.router import router as ops_router
from app.payments.router import router as payments_router
from app.posts.router import router as posts_router
from app.users.router import router as users_router


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    settings.check_production_safety()
    await start_model_serving(settings)
    gc.freeze()  # startup objects out of the collector's way: fewer tail-latency pauses
    yield
    await stop_model_serving()
    cancel_standing_loads()
    await close_redis()
    await db.dispose()


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    settings = settings or get_settings()
    register_embedded_defaults()
    configure_logging(settings.log_level, settings.json_logs)
    app = FastAPI(
        title="keel",
        version="0.1.0",
        description="Users, posts, a money ledger, background jobs, CSV ingestion and ML serving.",
        lifespan=lifespan,
        default_response_class=ORJSONUTCResponse,
        docs_url=None,  # served by install_docs, from the app's own files
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)

    # Starlette tries routes in order, one pattern match each: the hot
    # endpoints (predictions, the caller's profile, posts) come first.
    for router in (
        ops_router,
        ml_router,
        users_router,
        posts_router,
        auth_router,
        jobs_router,
        emails_router,
        ingestion_router,
        ledger_router,
        payments_router,
    ):
        app.include_router(router)
    install_docs(app)  # after the API: its routes are matched after the API's
    mount_admin(app, settings)  # the operators' console at /admin (app/admin)

    app.add_middleware(
        BodySizeLimitMiddleware,
        default_limit=settings.max_body_bytes,
        overrides=upload_body_limits(settings),
        codes=UPLOAD_LIMIT_CODES,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestContextMiddleware, hsts=settings.is_production)
    return app


app = create_app()
