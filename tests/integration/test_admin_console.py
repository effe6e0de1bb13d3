"""The console at /admin over HTTP: sign-in (same bcrypt check and lockout as
POST /token), the session, CSRF on every change, read-only views, the
actions and their audit records."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any, Dict, Optional

import pytest
from sqlalchemy import func, select

from app.admin.models import AuditRecord
from app.auth.models import RefreshToken
from app.core.db import db
from app.jobs.models import DEAD, QUEUED, Job
from app.ledger.models import Account
from app.posts.models import Post
from app.users import service as users_service
from app.users.models import User
from tests.conftest import unique_email

PASSWORD = "correct-horse-1"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


async def create_user(*, superuser: bool = False, active: bool = True) -> Dict[str, Any]:
    email = unique_email("admin" if superuser else "user")
    async with db.sessionmaker() as session:
        user = await users_service.create_user(
            session, email=email, password=PASSWORD, name="Console Test", is_superuser=superuser
        )
        user.is_active = active
        await session.commit()
        return {"id": user.id, "email": email}


async def load(model: Any, pk: Any) -> Any:
    async with db.sessionmaker() as session:
        return await session.get(model, pk)


async def audit_records(action: Optional[str] = None) -> list:
    async with db.sessionmaker() as session:
        stmt = select(AuditRecord).order_by(AuditRecord.id)
        if action:
            stmt = stmt.where(AuditRecord.action == action)
        return list((await session.execute(stmt)).scalars())


async def form_token(client: Any, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    match = CSRF_RE.search(page.text)
    assert match, page.text
    return match.group(1)


async def sign_in(client: Any, email: str, password: str = PASSWORD) -> Any:
    token = await form_token(client, "/admin/login")
    return await client.post(
        "/admin/login", data={"username": email, "password": password, "csrf_token": token}
    )


@pytest.fixture
async def admin_client(committed_client: Any) -> Any:
    """A client signed in as a fresh superuser (its record on `.admin`)."""
    admin = await create_user(superuser=True)
    response = await sign_in(committed_client, admin["email"])
    assert response.status_code == 302, response.text
    assert response.headers["location"].endswith("/admin/")
    committed_client.admin = admin
    return committed_client


async def insert_dead_job() -> int:
    async with db.sessionmaker() as session:
        job = Job(kind="tests.nothing", payload={"n": 1}, status=DEAD, attempts=4)
        job.last_error = "RuntimeError: boom"
        session.add(job)
        await session.commit()
        return job.id


# ------------------------------------------------------------ no session


CONSOLE_GETS = [
    "/admin/",
    "/admin/user/list",
    "/admin/user/list?search=admin",
    "/admin/user/details/{user}",
    "/admin/post/list",
    "/admin/job/list",
    "/admin/job/list?status=dead",
    "/admin/job/details/{job}",
    "/admin/models",
    "/admin/account/list",
    "/admin/transfer/list",
    "/admin/ledger-entry/list",
    "/admin/payment/list",
    "/admin/payment-event/list",
    "/admin/audit-record/list",
    "/admin/user/create",
    "/admin/user/edit/{user}",
    "/admin/user/export/csv",
]
CONSOLE_POSTS = [
    "/admin/user/operate/{user}/deactivate",
    "/admin/user/operate/{user}/grant-superuser",
    "/admin/post/operate/1/delete",
    "/admin/job/operate/{job}/retry",
    "/admin/models/activate",
    "/admin/user/create",
    "/admin/user/edit/{user}",
    "/admin/account/edit/1",
]


async def test_every_console_url_without_a_session_redirects_to_sign_in(committed_client):
    victim = await create_user()
    job_id = await insert_dead_job()
    ids = {"user": victim["id"], "job": job_id}
    for path in CONSOLE_GETS:
        response = await committed_client.get(path.format(**ids))
        assert response.status_code == 302, path
        assert response.headers["location"].endswith("/admin/login"), path
        assert victim["email"] not in response.text
    for path in CONSOLE_POSTS:
        response = await committed_client.post(path.format(**ids), data={"version": "v1"})
        assert response.status_code == 302, path
        assert response.headers["location"].endswith("/admin/login"), path
    response = await committed_client.delete(f"/admin/user/delete?pks={victim['id']}")
    assert response.status_code == 302
    assert (await load(User, victim["id"])).is_active
    assert (await load(Job, job_id)).status == DEAD
    assert await audit_records() == []


async def test_sign_in_page_is_self_contained_under_a_strict_csp(committed_client):
    page = await committed_client.get("/admin/login")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    assert page.headers["cache-control"] == "no-store"
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets
    for url in assets:
        assert url.startswith("http://test/admin/") or url.startswith("/admin"), url
        asset = await committed_client.get(url)
        assert asset.status_code == 200, url
    assert "<script>" not in page.text  # no inline script for the CSP to block


# ------------------------------------------------------------ sign-in


async def test_a_superuser_signs_in_and_sees_the_overview(admin_client):
    overview = await admin_client.get("/admin/")
    assert overview.status_code == 200
    assert admin_client.admin["email"] in overview.text
    assert "Readiness" in overview.text and "<svg" in overview.text
    cookie = overview.request.headers["cookie"]
    assert "keel_admin=" in cookie
    [record] = await audit_records("console.sign_in")
    assert record.actor_id == admin_client.admin["id"] and record.channel == "console"


async def test_session_cookie_is_httponly_lax_and_scoped_to_the_console(committed_client):
    admin = await create_user(superuser=True)
    response = await sign_in(committed_client, admin["email"])
    header = response.headers["set-cookie"].lower()
    assert header.startswith("keel_admin=")
    assert "httponly" in header and "samesite=lax" in header and "path=/admin" in header
    assert "secure" not in header  # only in production (see the unit test below)


def test_the_cookie_is_secure_in_production() -> None:
    from starlette.middleware.sessions import SessionMiddleware

    from app.admin.security import AdminAuth
    from app.core.config import Settings

    auth = AdminAuth(Settings(environment="production", secret_key="x" * 40))
    [middleware] = auth.middlewares
    assert middleware.cls is SessionMiddleware
    assert middleware.kwargs["https_only"] is True
    assert middleware.kwargs["secret_key"] == "x" * 40
    assert AdminAuth(Settings()).middlewares[0].kwargs["https_only"] is False


@pytest.mark.parametrize("kind", ["non_superuser", "wrong_password", "inactive", "unknown"])
async def test_only_active_superusers_with_the_right_password_get_in(committed_client, kind):
    user = await create_user(superuser=kind != "non_superuser", active=kind != "inactive")
    email = "nobody@example.com" if kind == "unknown" else user["email"]
    password = "wrong-password-9" if kind == "wrong_password" else PASSWORD
    response = await sign_in(committed_client, email, password)
    assert response.status_code == 400
    assert 'id="login-error"' in response.text
    if kind == "non_superuser":
        assert "Only superusers" in response.text
    else:
        assert "Invalid email or password" in response.text
    after = await committed_client.get("/admin/user/list")
    assert after.status_code == 302 and after.headers["location"].endswith("/admin/login")


async def test_sign_in_without_the_form_token_is_refused(committed_client):
    admin = await create_user(superuser=True)
    await committed_client.get("/admin/login")
    response = await committed_client.post(
        "/admin/login", data={"username": admin["email"], "password": PASSWORD}
    )
    assert response.status_code == 400
    assert (await committed_client.get("/admin/")).status_code == 302


async def test_failures_on_token_lock_the_console_and_the_other_way_round(
    committed_client, settings
):
    first = await create_user(superuser=True)
    for _ in range(settings.login_max_failures):
        failed = await committed_client.post(
            "/token", data={"username": first["email"], "password": "wrong-password-9"}
        )
        assert failed.status_code == 401
    refused = await sign_in(committed_client, first["email"])
    assert refused.status_code == 400
    assert "Too many failed sign-ins" in refused.text
    assert (await committed_client.get("/admin/")).status_code == 302

    second = await create_user(superuser=True)
    for _ in range(settings.login_max_failures):
        failed = await sign_in(committed_client, second["email"], "wrong-password-9")
        assert "Invalid email or password" in failed.text
    token = await committed_client.post(
        "/token", data={"username": second["email"], "password": PASSWORD}
    )
    assert token.status_code == 429


async def test_sign_out_needs_the_token_and_ends_the_session(admin_client):
    refused = await admin_client.get("/admin/logout")
    assert refused.status_code == 403
    assert (await admin_client.get("/admin/")).status_code == 200
    page = await admin_client.get("/admin/")
    href = re.search(r'href="([^"]*/admin/logout\?csrf_token=[^"]+)"', page.text).group(1)
    out = await admin_client.get(href.replace("&amp;", "&"))
    assert out.status_code == 302 and out.headers["location"].endswith("/admin/login")
    assert (await admin_client.get("/admin/")).status_code == 302


async def test_an_idle_session_expires(committed_client, settings):
    from itsdangerous import TimestampSigner

    from app.admin.security import IDLE_TIMEOUT_SECONDS

    admin = await create_user(superuser=True)
    assert (await sign_in(committed_client, admin["email"])).status_code == 302
    assert (await committed_client.get("/admin/")).status_code == 200

    def cookie(seen: float) -> str:
        session = {"uid": admin["id"], "since": seen, "seen": seen, "csrf": "t"}
        data = base64.b64encode(json.dumps(session).encode())
        return TimestampSigner(settings.secret_key).sign(data).decode()

    committed_client.cookies.clear()
    fresh = await committed_client.get(
        "/admin/", headers={"cookie": f"keel_admin={cookie(time.time() - 60.0)}"}
    )
    assert fresh.status_code == 200
    stale = time.time() - IDLE_TIMEOUT_SECONDS - 60.0
    expired = await committed_client.get(
        "/admin/", headers={"cookie": f"keel_admin={cookie(stale)}"}
    )
    assert expired.status_code == 302 and expired.headers["location"].endswith("/admin/login")


# ------------------------------------------------------------ CSRF and read-only


async def test_actions_without_the_csrf_token_are_refused(admin_client):
    victim = await create_user()
    job_id = await insert_dead_job()
    attempts = [
        (f"/admin/user/operate/{victim['id']}/deactivate", {}),
        (f"/admin/user/operate/{victim['id']}/deactivate", {"csrf_token": "forged"}),
        (f"/admin/user/operate/{victim['id']}/grant-superuser", {}),
        (f"/admin/job/operate/{job_id}/retry", {"csrf_token": ""}),
        ("/admin/models/activate", {"version": "v2"}),
    ]
    for path, data in attempts:
        response = await admin_client.post(path, data=data)
        assert response.status_code == 403, path
    user = await load(User, victim["id"])
    assert user.is_active and not user.is_superuser
    assert (await load(Job, job_id)).status == DEAD
    assert await audit_records("user.deactivate") == []
    assert await audit_records("job.retry") == []


async def test_read_only_views_refuse_creates_edits_and_deletes(admin_client):
    victim = await create_user()
    async with db.sessionmaker() as session:
        account = Account(owner_id=victim["id"], currency="EUR")
        session.add(account)
        await session.flush()
        account_id = account.id
        await session.commit()
    for identity, pk in [
        ("account", account_id),
        ("transfer", 1),
        ("ledger-entry", 1),
        ("payment", 1),
        ("payment-event", 1),
        ("audit-record", 1),
        ("user", victim["id"]),
        ("post", 1),
        ("job", 1),
    ]:
        assert (await admin_client.get(f"/admin/{identity}/create")).status_code == 403
        created = await admin_client.post(f"/admin/{identity}/create", data={"balance": "100"})
        assert created.status_code == 403, identity
        assert (await admin_client.get(f"/admin/{identity}/edit/{pk}")).status_code == 403
        edited = await admin_client.post(
            f"/admin/{identity}/edit/{pk}", data={"balance": "1000000", "is_superuser": "y"}
        )
        assert edited.status_code == 403, identity
        deleted = await admin_client.delete(f"/admin/{identity}/delete?pks={pk}")
        assert deleted.status_code == 403, identity
        assert (await admin_client.get(f"/admin/{identity}/export/csv")).status_code == 403
    assert str((await load(Account, account_id)).balance) == "0.00"
    assert not (await load(User, victim["id"])).is_superuser
    detail = await admin_client.get(f"/admin/account/details/{account_id}")
    assert detail.status_code == 200
    assert "/operate/" not in detail.text and "/edit/" not in detail.text


async def test_user_detail_never_shows_the_password_hash(admin_client):
    victim = await create_user()
    user = await load(User, victim["id"])
    for path in (f"/admin/user/details/{victim['id']}", "/admin/user/list"):
        page = await admin_client.get(path)
        assert page.status_code == 200
        assert victim["email"] in page.text
        assert user.password_hash not in page.text and "password" not in page.text.lower()


async def test_lists_sort_only_by_their_sortable_columns(admin_client):
    first, second = await create_user(), await create_user()
    expected = [str(second["id"]), str(first["id"])]  # default: newest first
    for sort in ("password_hash", "no_such_column", "__class__", "posts"):
        page = await admin_client.get(f"/admin/user/list?sortBy={sort}&sort=asc")
        assert page.status_code == 200, sort
        ids = re.findall(r"/admin/user/details/(\d+)", page.text)
        assert [i for i in ids if i in expected] == expected, sort
    by_email = await admin_client.get("/admin/user/list?sortBy=email&sort=asc")
    assert by_email.status_code == 200


# ------------------------------------------------------------ actions


async def operate(client: Any, identity: str, pk: int, operation: str) -> Any:
    token = await form_token(client, f"/admin/{identity}/details/{pk}")
    return await client.post(
        f"/admin/{identity}/operate/{pk}/{operation}", data={"csrf_token": token}
    )


async def test_deactivate_revokes_sessions_and_reactivate_restores_sign_in(admin_client):
    victim = await create_user()
    tokens = await admin_client.post(
        "/token", data={"username": victim["email"], "password": PASSWORD}
    )
    headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
    assert (await admin_client.get("/api/users/me", headers=headers)).status_code == 200

    done = await operate(admin_client, "user", victim["id"], "deactivate")
    assert done.status_code == 303
    page = await admin_client.get(done.headers["location"])
    assert "deactivated" in page.text
    assert (await admin_client.get("/api/users/me", headers=headers)).status_code == 401
    refreshed = await admin_client.post(
        "/token/refresh", json={"refresh_token": tokens.json()["refresh_token"]}
    )
    assert refreshed.status_code == 401
    # Ended for good, as the API's revocation does (not only refused while inactive).
    assert (await load(User, victim["id"])).tokens_valid_after is not None
    async with db.sessionmaker() as session:
        open_tokens = await session.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(RefreshToken.user_id == victim["id"], RefreshToken.revoked_at.is_(None))
        )
    assert open_tokens == 0
    [record] = await audit_records("user.deactivate")
    assert record.actor_id == admin_client.admin["id"]
    assert record.object_type == "user" and record.object_id == str(victim["id"])
    assert record.address == "127.0.0.1" and record.channel == "console"

    assert (await operate(admin_client, "user", victim["id"], "reactivate")).status_code == 303
    again = await admin_client.post(
        "/token", data={"username": victim["email"], "password": PASSWORD}
    )
    assert again.status_code == 200
    assert len(await audit_records("user.reactivate")) == 1


async def test_grant_and_revoke_superuser_but_never_on_yourself(admin_client):
    victim = await create_user()
    assert (await operate(admin_client, "user", victim["id"], "grant-superuser")).status_code == 303
    assert (await load(User, victim["id"])).is_superuser
    assert (
        await operate(admin_client, "user", victim["id"], "revoke-superuser")
    ).status_code == 303
    assert not (await load(User, victim["id"])).is_superuser

    me = admin_client.admin["id"]
    own = await admin_client.get(f"/admin/user/details/{me}")
    assert "/operate/" not in own.text  # no buttons on your own account
    token = await form_token(admin_client, "/admin/login")  # the session's token
    for operation in ("revoke-superuser", "deactivate"):
        refused = await admin_client.post(
            f"/admin/user/operate/{me}/{operation}", data={"csrf_token": token}
        )
        assert refused.status_code == 303
        page = await admin_client.get(refused.headers["location"])
        assert "your own account" in page.text
    mine = await load(User, me)
    assert mine.is_superuser and mine.is_active
    actions = [r.action for r in await audit_records() if r.action.startswith("user.")]
    assert actions == ["user.grant_superuser", "user.revoke_superuser"]


async def test_deactivating_a_superuser_ends_their_console_session(admin_client, app):
    import httpx

    other = await create_user(superuser=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as second:
        assert (await sign_in(second, other["email"])).status_code == 302
        assert (await second.get("/admin/user/list")).status_code == 200
        assert (await operate(admin_client, "user", other["id"], "deactivate")).status_code == 303
        after = await second.get("/admin/user/list")
        assert after.status_code == 302 and after.headers["location"].endswith("/admin/login")
        assert other["email"] not in after.text


async def test_a_superuser_deactivated_outside_the_console_is_signed_out(admin_client):
    async with db.sessionmaker() as session:
        me = await session.get(User, admin_client.admin["id"])
        me.is_active = False  # e.g. by SQL: no session revocation
        await session.commit()
    after = await admin_client.get("/admin/user/list")
    assert after.status_code == 302 and after.headers["location"].endswith("/admin/login")


async def test_a_superuser_who_loses_the_right_is_signed_out(admin_client, app):
    import httpx

    other = await create_user(superuser=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as second:
        assert (await sign_in(second, other["email"])).status_code == 302
        await operate(admin_client, "user", other["id"], "revoke-superuser")
        assert (await second.get("/admin/")).status_code == 302


async def test_delete_a_post_from_the_console(admin_client):
    author = await create_user()
    async with db.sessionmaker() as session:
        post = Post(author_id=author["id"], title="spam", body="buy now")
        session.add(post)
        await session.commit()
        post_id = post.id
    listing = await admin_client.get("/admin/post/list?search=buy")
    assert "spam" in listing.text
    assert (await operate(admin_client, "post", post_id, "delete")).status_code == 303
    assert await load(Post, post_id) is None
    [record] = await audit_records("post.delete")
    assert record.object_id == str(post_id)


async def test_jobs_list_dead_letters_first_and_retry_one(admin_client):
    async with db.sessionmaker() as session:
        session.add(Job(kind="tests.nothing", payload={}, status="succeeded"))
        await session.commit()
    job_id = await insert_dead_job()
    async with db.sessionmaker() as session:
        session.add(Job(kind="tests.nothing", payload={}, status="succeeded"))
        await session.commit()
    listing = await admin_client.get("/admin/job/list")
    rows = re.findall(r"/admin/job/details/(\d+)", listing.text)
    assert rows[0] == str(job_id)
    assert "RuntimeError: boom" in listing.text
    dead_only = await admin_client.get("/admin/job/list?status=dead")
    assert set(re.findall(r"/admin/job/details/(\d+)", dead_only.text)) == {str(job_id)}

    assert (await operate(admin_client, "job", job_id, "retry")).status_code == 303
    job = await load(Job, job_id)
    assert job.status == QUEUED and job.attempts == 0
    [record] = await audit_records("job.retry")
    assert record.object_id == str(job_id)

    # A job that is not dead cannot be retried: the service's refusal is shown.
    token = await form_token(admin_client, "/admin/login")  # the session's token
    again = await admin_client.post(
        f"/admin/job/operate/{job_id}/retry", data={"csrf_token": token}
    )
    page = await admin_client.get(again.headers["location"])
    assert "Only dead jobs can be retried" in page.text
    assert len(await audit_records("job.retry")) == 1


async def test_api_superuser_actions_are_audited_too(committed_client):
    admin = await create_user(superuser=True)
    tokens = await committed_client.post(
        "/token", data={"username": admin["email"], "password": PASSWORD}
    )
    headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
    job_id = await insert_dead_job()
    retried = await committed_client.post(f"/api/jobs/{job_id}/retry", headers=headers)
    assert retried.status_code == 202
    [record] = await audit_records("job.retry")
    assert (record.channel, record.actor_id, record.object_id) == ("api", admin["id"], str(job_id))
    assert record.actor_email == admin["email"] and record.address == "127.0.0.1"


async def test_api_model_activation_is_audited_and_a_refused_one_is_not(committed_client, serving):
    admin = await create_user(superuser=True)
    tokens = await committed_client.post(
        "/token", data={"username": admin["email"], "password": PASSWORD}
    )
    headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
    done = await committed_client.post("/api/models/v2/activate", headers=headers)
    assert done.status_code == 200 and serving.current().version == "v2"
    refused = await committed_client.post("/api/models/v3/activate", headers=headers)
    assert refused.status_code == 409 and serving.current().version == "v2"
    records = await audit_records("model.activate")
    assert [(r.object_id, r.channel, r.actor_id) for r in records] == [("v2", "api", admin["id"])]


async def test_models_page_activates_and_shows_a_refused_activation(admin_client, serving):
    page = await admin_client.get("/admin/models")
    assert page.status_code == 200
    for version in ("v1", "v2", "v3"):
        assert f'data-version="{version}"' in page.text
    token = CSRF_RE.search(page.text).group(1)

    done = await admin_client.post(
        "/admin/models/activate", data={"version": "v2", "csrf_token": token}
    )
    assert done.status_code == 303
    assert "Now serving model v2" in (await admin_client.get("/admin/models")).text
    assert serving.current().version == "v2"

    refused = await admin_client.post(
        "/admin/models/activate", data={"version": "v3", "csrf_token": token}
    )
    page = await admin_client.get(refused.headers["location"])
    assert "Refused" in page.text and "checksum" in page.text
    assert serving.current().version == "v2"
    assert [r.object_id for r in await audit_records("model.activate")] == ["v2"]


async def test_overview_counts_queued_and_dead_jobs(admin_client):
    await insert_dead_job()
    await insert_dead_job()
    page = await admin_client.get("/admin/")
    assert re.search(r'id="jobs-dead">2<', page.text)
    assert re.search(r'id="jobs-queued">0<', page.text)
    async with db.sessionmaker() as session:
        dead = await session.scalar(select(func.count()).select_from(Job).where(Job.status == DEAD))
    assert dead == 2


async def test_a_database_outage_is_a_503_with_retry_after(admin_client, engine):
    from sqlalchemy.ext.asyncio import create_async_engine

    from tests.e2e.conftest import free_port

    dead = create_async_engine(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none",
        connect_args={"timeout": 2},
    )
    db.configure(dead)
    try:
        for path in ("/admin/", "/admin/user/list"):
            response = await admin_client.get(path)
            assert response.status_code == 503, path
            assert response.headers["retry-after"] == "5"
            assert "content-security-policy" in response.headers
    finally:
        db.configure(engine)
        await dead.dispose()
    assert (await admin_client.get("/admin/")).status_code == 200
