from __future__ import annotations

import httpx


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
