"""The floor: one FastAPI route behind the hot endpoints' auth dependency,
returning a constant body. Not part of the app; `bench/compare.py` serves it
with the same server command and worker count as the API:

    gunicorn -c python:app.gunicorn_conf -w 1 --chdir bench floor:app

It imports whichever `app` package is on the path (a baseline worktree's or
the new code's), so each side's floor runs that side's server, its auth
dependency and its lifespan (connection pools, token and standing caches).
The dependency is the one of `POST /api/predict` that reads the bearer
token (`KEEL_BENCH_FLOOR_AUTH` names another attribute of `app.auth.dependencies`
instead). What an endpoint costs above this is its own work: middleware,
validation, database reads, serialization.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from starlette.responses import Response

from app.main import app as keel_app

BODY = b'{"floor":true}'


def auth_dependency() -> Callable[..., Any]:
    """The callable behind the auth dependency of the hot endpoints."""
    name = os.environ.get("KEEL_BENCH_FLOOR_AUTH")
    if name:
        from typing_extensions import get_args

        import app.auth.dependencies as dependencies

        marker = getattr(dependencies, name)
        for extra in get_args(marker)[1:]:  # Annotated[X, Depends(f)]
            if getattr(extra, "dependency", None) is not None:
                return extra.dependency  # type: ignore[no-any-return]
        return marker  # type: ignore[no-any-return]
    for route in keel_app.routes:
        if isinstance(route, APIRoute) and route.path == "/api/predict" and "POST" in route.methods:
            for dependency in route.dependant.dependencies:
                if dependency.call is not None and reads_credentials(dependency):
                    return dependency.call
    raise RuntimeError("POST /api/predict declares no dependency that reads credentials")


def reads_credentials(dependency: Dependant) -> bool:
    """Whether a security scheme (the bearer token) is among its dependencies."""
    if isinstance(dependency.call, SecurityBase):
        return True
    return any(reads_credentials(sub) for sub in dependency.dependencies)


AUTH = auth_dependency()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # The API's own startup and shutdown: the pools and caches the auth
    # dependency uses exist here as they do in the API's worker.
    async with keel_app.router.lifespan_context(keel_app):
        yield


app = FastAPI(lifespan=lifespan, openapi_url=None)


@app.get("/floor")
async def floor(caller: Any = Depends(AUTH)) -> Response:
    return Response(BODY, media_type="application/json")
