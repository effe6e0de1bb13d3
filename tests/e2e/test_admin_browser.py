"""The console in a real browser: the distribution's headless Chromium driven
by Playwright, against a real API server process, a real Celery worker, a
private Redis and an SMTP sink.

Skipped only when Chromium is not installed (`.ci/install-browser` installs
it). Set KEEL_ADMIN_SCREENSHOT=docs/admin-console.png to refresh the
screenshot in docs/admin.md.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterator

import httpx
import pytest

from tests.conftest import unique_email
from tests.e2e.conftest import TestSmtpHandler, WorkerPool, start_server, stop_process

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Chromium is not installed (run .ci/install-browser: apt-get install chromium)",
        allow_module_level=True,
    )
playwright_api = pytest.importorskip("playwright.async_api")

PASSWORD = "correct-horse-1"
# Hang guards only: every wait below ends as soon as its condition holds.
PATIENCE = 60.0


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    deadline = time.monotonic() + PATIENCE
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {PATIENCE}s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two servable versions: v1 (active) and v2."""
    from app.ml.training import train_model

    root = tmp_path_factory.mktemp("admin-models")
    train_model(root, kind="logreg", activate=True)
    train_model(root, kind="forest", n_estimators=10)
    return root


@pytest.fixture(scope="module")
def console_server(worker_env: Dict[str, str], model_dir: Path) -> Iterator[str]:
    """An API process that publishes jobs to the private Redis the worker reads."""
    proc, base_url = start_server({**worker_env, "MODEL_DIR": str(model_dir)})
    try:
        yield base_url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Any, console_server: str) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies) that records every request and
    console error, so the test can check nothing left the app and the CSP
    blocked nothing."""
    context = await browser.new_context(
        base_url=console_server, viewport={"width": 1280, "height": 860}
    )
    context.set_default_timeout(PATIENCE * 1000)  # a hang guard for a loaded machine
    page = await context.new_page()
    page.requests = []
    page.errors = []
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    await context.close()
    assert all(url.startswith(console_server) for url in page.requests), page.requests
    assert not [e for e in page.errors if "Content Security Policy" in e], page.errors


async def create_user(*, superuser: bool = False) -> Dict[str, Any]:
    from app.core.db import db
    from app.users import service as users_service

    email = unique_email("console")
    async with db.sessionmaker() as session:
        user = await users_service.create_user(
            session, email=email, password=PASSWORD, name="Browser Test", is_superuser=superuser
        )
        await session.commit()
        return {"id": user.id, "email": email}


async def api_token(base_url: str, email: str) -> Dict[str, str]:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/token", data={"username": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def sign_in(page: Any, email: str) -> None:
    await page.goto("/admin/login")
    await page.fill("#username", email)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()


async def test_a_non_superuser_is_refused(page: Any, committed_db: Any) -> None:
    user = await create_user()
    await sign_in(page, user["email"])
    assert "Only superusers may use the console." in await page.inner_text("#login-error")
    assert page.url.endswith("/admin/login")
    await page.goto("/admin/user/list")
    assert page.url.endswith("/admin/login")  # redirected: no data


async def test_an_operator_works_the_console(
    page: Any,
    console_server: str,
    committed_db: Any,
    worker_pool: WorkerPool,
    mailbox: TestSmtpHandler,
) -> None:
    from app.core.db import db
    from app.jobs.models import DEAD, Job
    from app.users.service import SEND_WELCOME_EMAIL

    admin = await create_user(superuser=True)
    await sign_in(page, admin["email"])
    assert page.url.endswith("/admin/")
    assert admin["email"] in await page.inner_text("#signed-in-as")
    assert "ok" in await page.inner_text("#readiness")

    # Users, searched by email through the page's own script.
    member = await create_user()
    member_headers = await api_token(console_server, member["email"])
    await page.goto("/admin/user/list")
    await page.fill("#search-input", member["email"])
    await page.press("#search-input", "Enter")
    await page.wait_for_url("**search=**")
    assert member["email"] in await page.inner_text("table")
    assert admin["email"] not in await page.inner_text("table")

    # Jobs: a dead letter is listed first; retry it, see it queued, then a
    # real worker (started only now) delivers it.
    async with db.sessionmaker() as session:
        job = Job(
            kind=SEND_WELCOME_EMAIL,
            payload={"user_id": member["id"]},
            owner_id=member["id"],
            status=DEAD,
            attempts=4,
            last_error="SMTPServerDisconnected: simulated outage",
        )
        session.add(job)
        await session.commit()
        job_id = job.id
    await page.goto("/admin/job/list?status=dead")
    assert "SMTPServerDisconnected" in await page.inner_text("table")
    await page.click(f"a[href$='/admin/job/details/{job_id}']")
    await page.click("#op-retry")
    await page.wait_for_load_state()
    assert f"Job {job_id} queued again" in await page.inner_text("#flash-messages")
    assert "queued" in await page.inner_text("table")
    worker_pool.current()

    async def delivered() -> bool:
        async with db.sessionmaker() as session:
            row = await session.get(Job, job_id, populate_existing=True)
            return row is not None and row.status == "succeeded"

    await eventually(delivered, "the retried job to succeed")
    assert [m["To"] for m in mailbox.received()].count(member["email"]) == 1
    await page.reload()
    assert "succeeded" in await page.inner_text("table")

    # Models: activate v2 and the API serves it.
    await page.goto("/admin/models")
    assert "v1" in await page.inner_text("#active-model >> xpath=..")
    await page.click("#activate-v2")
    await page.wait_for_load_state()
    assert "Now serving model v2" in await page.inner_text("#flash-messages")
    async with httpx.AsyncClient(base_url=console_server) as http:
        active = await http.get("/api/models/active", headers=member_headers)
    assert active.status_code == 200 and active.json()["version"] == "v2"

    # Deactivate the member: their next API call is refused.
    await page.goto(f"/admin/user/details/{member['id']}")
    await page.click("#op-deactivate")
    await page.wait_for_load_state()
    assert "deactivated" in await page.inner_text("#flash-messages")
    async with httpx.AsyncClient(base_url=console_server) as http:
        me = await http.get("/api/users/me", headers=member_headers)
    assert me.status_code == 401

    # The audit view lists what was done, and the overview shows it all.
    await page.goto("/admin/audit-record/list")
    audit = await page.inner_text("table")
    for action in ("console.sign_in", "job.retry", "model.activate", "user.deactivate"):
        assert action in audit
    await page.goto("/admin/")
    assert "v2" in await page.inner_text("#overview-active-model")
    assert await page.locator("#outcomes svg rect").count() >= 1
    screenshot = os.environ.get("KEEL_ADMIN_SCREENSHOT")
    if screenshot:
        await page.screenshot(path=screenshot)

    # Sign out: the console is closed again.
    await page.click("#sign-out")
    await page.wait_for_load_state()
    assert page.url.endswith("/admin/login")
    await page.goto("/admin/job/list")
    assert page.url.endswith("/admin/login")
