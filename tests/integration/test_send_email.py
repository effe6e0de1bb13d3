"""POST /api/send-email/{user_id}: who may queue what, and the job it writes.

The common case is one statement (app/emails/repository.py); every refusal
falls back to the full checks, so the status codes must be the spec's."""

from __future__ import annotations

from typing import Any, Callable, List

from sqlalchemy import select

from app.auth import service as auth_service
from app.jobs.models import Job
from app.jobs.outbox import relay
from app.jobs.publisher import OutboundMessage
from app.users.models import User


async def job_of(session: Any, job_id: int) -> Job:
    return (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()


async def test_send_email_to_yourself_queues_a_job_and_publishes_it(
    client: Any, session: Any, make_user: Callable[..., Any], monkeypatch: Any
) -> None:
    user = await make_user()
    published: List[OutboundMessage] = []
    monkeypatch.setattr(relay, "submit", published.extend)
    response = await client.post(
        f"/api/send-email/{user['id']}",
        json={"subject": "Hi", "body": "Hello there"},
        headers=user["headers"],
    )
    assert response.status_code == 202, response.text
    assert response.json()["message"] == "Email queued"
    job = await job_of(session, response.json()["job_id"])
    assert (job.kind, job.status, job.owner_id) == ("emails.send", "queued", user["id"])
    assert job.payload == {"user_id": user["id"], "subject": "Hi", "body": "Hello there"}
    assert (job.attempts, job.deliveries) == (0, 0)
    assert published == [OutboundMessage(job.id, "emails.send")]


async def test_send_email_without_body_stores_only_the_recipient(
    client: Any, session: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    response = await client.post(f"/api/send-email/{user['id']}", headers=user["headers"])
    assert response.status_code == 202, response.text
    job = await job_of(session, response.json()["job_id"])
    assert job.payload == {"user_id": user["id"]}


async def test_send_email_to_someone_else_is_forbidden(
    client: Any, session: Any, make_user: Callable[..., Any]
) -> None:
    ann, bob = await make_user(), await make_user()
    before = (await session.execute(select(Job.id))).scalars().all()
    response = await client.post(f"/api/send-email/{bob['id']}", headers=ann["headers"])
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    # Forbidden before the recipient is looked up, as before.
    missing = await client.post("/api/send-email/999999", headers=ann["headers"])
    assert missing.status_code == 403
    assert (await session.execute(select(Job.id))).scalars().all() == before


async def test_superuser_may_email_anyone_but_not_a_missing_user(
    client: Any, session: Any, make_user: Callable[..., Any], make_superuser: Callable[..., Any]
) -> None:
    admin, bob = await make_superuser(), await make_user()
    sent = await client.post(f"/api/send-email/{bob['id']}", headers=admin["headers"])
    assert sent.status_code == 202, sent.text
    job = await job_of(session, sent.json()["job_id"])
    assert job.owner_id == admin["id"] and job.payload == {"user_id": bob["id"]}
    missing = await client.post("/api/send-email/999999", headers=admin["headers"])
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_send_email_rejects_revoked_inactive_and_missing_tokens(
    client: Any, session: Any, make_user: Callable[..., Any]
) -> None:
    ann, bob = await make_user(), await make_user()
    assert (await client.post(f"/api/send-email/{ann['id']}")).status_code == 401
    forged = await client.post(
        f"/api/send-email/{ann['id']}", headers={"Authorization": "Bearer not.a.jwt"}
    )
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_token"

    db_ann = await session.get(User, ann["id"])
    await auth_service.revoke_sessions(session, db_ann)
    db_bob = await session.get(User, bob["id"])
    db_bob.is_active = False
    await session.flush()
    before = (await session.execute(select(Job.id))).scalars().all()
    for user in (ann, bob):
        response = await client.post(f"/api/send-email/{user['id']}", headers=user["headers"])
        assert response.status_code == 401 and response.json()["code"] == "invalid_token"
    assert (await session.execute(select(Job.id))).scalars().all() == before


async def test_subject_with_a_line_break_is_rejected(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    response = await client.post(
        f"/api/send-email/{user['id']}",
        json={"subject": "a\r\nBcc: x@y.z"},
        headers=user["headers"],
    )
    assert response.status_code == 422


async def _committed_user(client: Any) -> Any:
    from tests.conftest import unique_email

    email = unique_email()
    created = await client.post(
        "/api/users", json={"email": email, "password": "correct-horse-1", "name": "Cy"}
    )
    assert created.status_code == 201, created.text
    tokens = await client.post("/token", data={"username": email, "password": "correct-horse-1"})
    return created.json()["id"], {"Authorization": f"Bearer {tokens.json()['access_token']}"}


async def test_send_email_commits_its_one_statement_before_publishing(
    committed_client: Any, committed_db: Any, monkeypatch: Any
) -> None:
    from sqlalchemy import text

    user_id, headers = await _committed_user(committed_client)
    other_id, _ = await _committed_user(committed_client)
    published: List[OutboundMessage] = []

    def submit(messages: List[OutboundMessage]) -> None:
        published.extend(messages)

    monkeypatch.setattr(relay, "submit", submit)
    sent = await committed_client.post(
        f"/api/send-email/{user_id}", json={"body": "x"}, headers=headers
    )
    assert sent.status_code == 202, sent.text
    job_id = sent.json()["job_id"]
    assert published == [OutboundMessage(job_id, "emails.send")]
    # Committed: visible from another connection.
    async with committed_db.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT kind, status, owner_id, payload FROM jobs WHERE id = :id"),
                {"id": job_id},
            )
        ).one()
    assert tuple(row) == ("emails.send", "queued", user_id, {"user_id": user_id, "body": "x"})

    refused = await committed_client.post(f"/api/send-email/{other_id}", headers=headers)
    assert refused.status_code == 403
    assert published == [OutboundMessage(job_id, "emails.send")]
