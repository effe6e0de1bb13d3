from __future__ import annotations

from typing import Tuple

import httpx
import pytest


def test_sign_up_login_and_read_me_over_http(live_server: str) -> None:
    with httpx.Client(base_url=live_server, timeout=10) as http:
        created = http.post(
            "/api/users", json={"email": "E2E@Example.com", "password": "password-1", "name": "E"}
        )
        assert created.status_code == 201, created.text
        assert created.json()["email"] == "e2e@example.com"

        tokens = http.post("/token", data={"username": "e2e@example.com", "password": "password-1"})
        assert tokens.status_code == 200
        headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}

        me = http.get("/api/users/me", headers=headers)
        assert me.status_code == 200
        assert me.json() == {"id": created.json()["id"], "email": "e2e@example.com", "name": "E"}
        assert me.headers["x-request-id"]

        post = http.post("/api/posts", json={"title": "over http"}, headers=headers)
        assert post.status_code == 201
        listed = http.get("/api/posts", headers=headers).json()
        assert [p["title"] for p in listed["items"]] == ["over http"]


def test_openapi_and_docs_are_served(live_server: str) -> None:
    with httpx.Client(base_url=live_server, timeout=10) as http:
        schema = http.get("/openapi.json")
        assert schema.status_code == 200
        paths = schema.json()["paths"]
        assert {"/api/users", "/token", "/token/refresh", "/api/posts/{post_id}"} <= set(paths)
        assert "swagger" in http.get("/docs").text.lower()


def _render_in_browser(url: str) -> Tuple[str, str]:
    """The page's DOM after its scripts ran in headless Chromium (the CSP
    enforced), and the browser's console log."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium on this machine")
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=30000",  # virtual time: runs until the page is idle
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,  # hang guard
    )
    return done.stdout, done.stderr


@pytest.mark.parametrize(
    ("page", "rendered"),
    [
        ("/docs", 'data-path="/api/users"'),  # Swagger UI drew the operations
        ("/redoc", "operation/"),  # ReDoc drew its operation anchors
    ],
)
def test_docs_pages_render_offline_under_their_csp(
    live_server: str, page: str, rendered: str
) -> None:
    dom, console = _render_in_browser(f"{live_server}{page}")
    assert rendered in dom, console[-3000:]
    violations = [
        line
        for line in console.splitlines()
        if "Content Security Policy" in line
        # ReDoc's footer logo points at its vendor's CDN: blocked, and nothing else is.
        and "cdn.redoc.ly/redoc/logo-mini.svg" not in line
    ]
    assert violations == []
