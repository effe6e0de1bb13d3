"""/docs and /redoc work with no internet: every file they load is served by
the app, and their Content-Security-Policy admits nothing else."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, AsyncIterator, Dict, List

import httpx
import pytest


@pytest.fixture
async def http(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def referenced_urls(html: str) -> List[str]:
    return re.findall(r'(?:src|href|spec-url)="([^"]*)"', html)


def csp_directives(header: str) -> Dict[str, List[str]]:
    directives: Dict[str, List[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def inline_script_hashes(html: str) -> List[str]:
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    ]


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_docs_pages_load_nothing_from_other_hosts(http: httpx.AsyncClient, page: str) -> None:
    response = await http.get(page)
    assert response.status_code == 200
    html = response.text
    assert "://" not in html  # no absolute URL at all: no CDN, no web fonts
    for url in referenced_urls(html):
        assert url.startswith("/") and not url.startswith("//"), url


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_every_asset_of_the_docs_pages_is_served_by_the_app(
    http: httpx.AsyncClient, page: str
) -> None:
    html = (await http.get(page)).text
    assets = [url for url in referenced_urls(html) if url != "/openapi.json"]
    assert any(url.endswith(".js") for url in assets), assets
    for url in assets:
        asset = await http.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    openapi = await http.get("/openapi.json")
    assert openapi.status_code == 200


async def test_swagger_ui_bundle_renders_openapi_3_1(http: httpx.AsyncClient) -> None:
    """FastAPI's schema is OpenAPI 3.1, which Swagger UI renders from version 5 on."""
    assert (await http.get("/openapi.json")).json()["openapi"].startswith("3.1")
    html = (await http.get("/docs")).text
    bundle_url = next(url for url in referenced_urls(html) if url.endswith("swagger-ui-bundle.js"))
    bundle = (await http.get(bundle_url)).text
    assert "isOAS31" in bundle  # Swagger UI 4 (e.g. swagger-ui-bundle 1.1) has no 3.1 support


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_docs_pages_send_a_csp_allowing_only_their_own_assets(
    http: httpx.AsyncClient, page: str
) -> None:
    response = await http.get(page)
    header = response.headers.get("content-security-policy")
    assert header, "no Content-Security-Policy on the docs page"
    directives = csp_directives(header)
    assert directives["default-src"] == ["'none'"]
    allowed = [source for sources in directives.values() for source in sources]
    assert not [s for s in allowed if "://" in s or s in ("*", "http:", "https:")], header
    scripts = directives["script-src"]
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
    # The page's own inline start-up script is admitted by its hash, and only it.
    assert sorted(s for s in scripts if s != "'self'") == sorted(
        inline_script_hashes(response.text)
    )
    assert directives["connect-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
