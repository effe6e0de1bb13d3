"""Builds the console (sqladmin on the app's engine and models) and mounts it at /admin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqladmin import Admin
from sqladmin.authentication import login_required
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from app.admin import overview
from app.admin.security import CSRF_FIELD, AdminAuth, ConsoleHeaders, csrf_token
from app.admin.views import VIEWS
from app.core.config import Settings
from app.core.db import db

TEMPLATES = Path(__file__).parent / "templates"


class ConsoleSession(AsyncSession):
    """An AsyncSession on the app's engine, looked up when the session is
    created (tests and `keel` commands configure the engine after import)."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("bind") is None:
            kwargs["bind"] = db.engine
        super().__init__(**kwargs)


class KeelAdmin(Admin):
    @login_required
    async def index(self, request: Request) -> Response:
        """The overview page."""
        async with db.sessionmaker() as session:
            data = await overview.build(session)
        return await self.templates.TemplateResponse(
            request, "keel/overview.html", {"overview": data, "title": "Overview"}
        )


def mount_admin(app: FastAPI, settings: Settings) -> KeelAdmin:
    admin = KeelAdmin(
        app,
        session_maker=async_sessionmaker(class_=ConsoleSession, expire_on_commit=False),
        base_url="/admin",
        title="keel admin",
        templates_dir=str(TEMPLATES),
        middlewares=[Middleware(ConsoleHeaders)],
        authentication_backend=AdminAuth(settings),
    )
    admin.templates.env.globals["csrf_token"] = csrf_token
    admin.templates.env.globals["csrf_field"] = CSRF_FIELD
    for view in VIEWS:
        admin.add_view(view)
    return admin
