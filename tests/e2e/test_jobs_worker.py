"""Jobs end to end: API -> outbox -> Redis -> Celery worker process -> SMTP.

Every test counts what the SMTP server accepted, by Message-ID: each job's
email must arrive exactly once, whatever was killed or restarted on the way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any, Awaitable, Callable, Dict, List

import pytest

from tests.conftest import unique_email
from tests.e2e.conftest import (
    STALL_ALL,
    MailBehaviour,
    RedisServer,
    TestSmtpHandler,
    Worker,
    WorkerPool,
)

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-1"

# Job limits no step of a test comes near (the shared worker's are seconds).
PATIENT_LIMITS = {
    "JOB_TIMEOUT_SECONDS": "20",
    "JOB_TIME_LIMIT_SECONDS": "30",
    "SMTP_TIMEOUT_SECONDS": "20",
}


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def job_row(engine: Any, job_id: int) -> Dict[str, Any]:
    from sqlalchemy import text

    async with engine.connect() as conn:
        row = (
            (await conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}))
            .mappings()
            .one()
        )
    return dict(row)


async def wait_status(engine: Any, job_id: int, status: str, timeout: float = 20) -> Dict[str, Any]:
    async def check() -> Any:
        row = await job_row(engine, job_id)
        return row if row["status"] == status else None

    return await eventually(check, timeout, f"job {job_id} to be {status}")


async def message_id_of(engine: Any, job_id: int) -> str:
    from app.emails.tasks import message_id_for_job
    from app.jobs.models import Job

    row = await job_row(engine, job_id)
    return message_id_for_job(Job(id=row["id"], created_at=row["created_at"]))


async def sign_up(client: Any, name: str = "Ann") -> Dict[str, Any]:
    email = unique_email()
    response = await client.post(
        "/api/users", json={"email": email, "password": PASSWORD, "name": name}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def login(client: Any, email: str, password: str = PASSWORD) -> Dict[str, Any]:
    response = await client.post("/token", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


async def welcome_job_id(engine: Any, user_id: int) -> int:
    from sqlalchemy import text

    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT id FROM jobs WHERE kind = 'users.send_welcome_email' AND owner_id = :u"
                ),
                {"u": user_id},
            )
        ).scalar_one()


async def make_superuser(engine: Any, client: Any) -> Dict[str, str]:
    from sqlalchemy import text

    user = await sign_up(client, name="Admin")
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE users SET is_superuser = true WHERE id = :id"), {"id": user["id"]}
        )
    tokens = await login(client, user["email"])
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_send_email_and_welcome_email_arrive_once_with_content(
    committed_client: Any, committed_db: Any, worker: Any, mailbox: TestSmtpHandler
) -> None:
    user = await sign_up(committed_client, name="Zoë")
    tokens = await login(committed_client, user["email"])
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}

    response = await committed_client.post(
        f"/api/send-email/{user['id']}",
        json={"subject": "Hi there", "body": "Body text"},
        headers=headers,
    )
    assert response.status_code == 202
    assert response.json()["message"] == "Email queued"
    job_id = response.json()["job_id"]

    done = await wait_status(committed_db, job_id, "succeeded")
    assert done["attempts"] == 1 and done["deliveries"] == 1 and done["last_error"] is None
    sent = mailbox.received(await message_id_of(committed_db, job_id))
    assert len(sent) == 1
    assert sent[0]["To"] == user["email"] and sent[0]["Subject"] == "Hi there"
    assert sent[0].get_content().strip() == "Body text"

    welcome_id = await welcome_job_id(committed_db, user["id"])
    await wait_status(committed_db, welcome_id, "succeeded")
    welcome = mailbox.received(await message_id_of(committed_db, welcome_id))
    assert len(welcome) == 1 and welcome[0]["Subject"] == "Welcome to keel"
    assert "Zoë" in welcome[0].get_content()

    public = await committed_client.get(f"/api/jobs/{job_id}", headers=headers)
    assert public.status_code == 200
    assert public.json()["status"] == "succeeded" and public.json()["kind"] == "emails.send"
    assert len(mailbox.received()) == 2


async def test_password_reset_email_token_sets_password_and_revokes_sessions(
    committed_client: Any, committed_db: Any, worker: Any, mailbox: TestSmtpHandler
) -> None:
    user = await sign_up(committed_client)
    old = await login(committed_client, user["email"])

    response = await committed_client.post(
        "/api/auth/password-reset", json={"email": user["email"]}
    )
    assert response.status_code == 202

    async def reset_mail() -> Any:
        return [m for m in mailbox.received() if m["Subject"] == "Reset your keel password"]

    [mail] = await eventually(reset_mail, 20, "the reset email")
    token = next(
        line.strip() for line in mail.get_content().splitlines() if line.startswith("    ")
    )

    confirm = await committed_client.post(
        "/api/auth/password-reset/confirm", json={"token": token, "new_password": "brand-new-pass"}
    )
    assert confirm.status_code == 204
    again = await committed_client.post(
        "/api/auth/password-reset/confirm", json={"token": token, "new_password": "another-pass-1"}
    )
    assert again.status_code == 400 and again.json()["code"] == "invalid_token"

    me = await committed_client.get(
        "/api/users/me", headers={"Authorization": f"Bearer {old['access_token']}"}
    )
    assert me.status_code == 401
    refreshed = await committed_client.post(
        "/token/refresh", json={"refresh_token": old["refresh_token"]}
    )
    assert refreshed.status_code == 401
    await login(committed_client, user["email"], "brand-new-pass")


async def test_killed_pool_child_mid_send_job_completes_and_email_arrives_once(
    committed_client: Any,
    committed_db: Any,
    worker: Any,
    mailbox: TestSmtpHandler,
    mail_behaviour: MailBehaviour,
) -> None:
    # Hold every message: the worker may reach DATA before we know the id.
    mail_behaviour.stall_ids.add(STALL_ALL)
    user = await sign_up(committed_client)
    job_id = await welcome_job_id(committed_db, user["id"])
    message_id = await message_id_of(committed_db, job_id)
    await wait_status(committed_db, job_id, "running")
    await asyncio.get_running_loop().run_in_executor(None, mail_behaviour.stalled.wait, 15)
    assert mail_behaviour.stalled.is_set()

    [child] = worker.pool_children()
    os.kill(child, signal.SIGKILL)
    mail_behaviour.stall_ids.discard(STALL_ALL)

    done = await wait_status(committed_db, job_id, "succeeded", timeout=30)
    assert done["deliveries"] == 2 and done["attempts"] == 1
    assert len(mailbox.received(message_id)) == 1
    assert worker.pool_children() != [child]


async def test_killed_pool_child_mid_batch_runs_each_job_of_the_batch_once(
    committed_client: Any,
    committed_db: Any,
    worker_pool: WorkerPool,
    mailbox: TestSmtpHandler,
    mail_behaviour: MailBehaviour,
    private_redis: RedisServer,
) -> None:
    from sqlalchemy import text

    from app.jobs.outbox import relay
    from app.jobs.publisher import OutboundMessage, Publisher
    from app.jobs.runner import JOB_LANES
    from app.users.service import SEND_WELCOME_EMAIL

    # One job done, one in flight on every lane, one not started yet.
    count = JOB_LANES + 2
    # Broker down during the sign-ups: their own messages are lost, so the
    # jobs reach the worker as the one batch message published below.
    private_redis.stop()
    users = [await sign_up(committed_client) for _ in range(count)]
    # Lost for sure only once the relay has given up on them: a publish still
    # retrying its broker connection when Redis comes back would deliver some
    # of these jobs outside the batch (a stalled one alone then blocks the
    # worker's only process, and the lanes never all stall).
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, relay.wait_idle, 60)
    job_ids = [await welcome_job_id(committed_db, u["id"]) for u in users]
    message_ids = [await message_id_of(committed_db, j) for j in job_ids]
    mail_behaviour.stall_ids.update(message_ids[1 : JOB_LANES + 1])
    # Keep the sweep off these rows: a job it republished on its own would
    # reach the worker outside the batch.
    async with committed_db.begin() as conn:
        await conn.execute(
            text("UPDATE jobs SET published_at = now() + interval '1 hour' WHERE id = ANY(:ids)"),
            {"ids": job_ids},
        )
    # A worker of its own whose limits are far beyond this test's steps: the
    # batch must be lost to the kill below, not to the task's hard time limit
    # (which acknowledges the message; on a slow machine it came first).
    for earlier in worker_pool.started:
        earlier.kill()  # no other worker may take the batch
    private_redis.start()
    worker = Worker(
        {**worker_pool.env, **PATIENT_LIMITS}, worker_pool.folder / "worker-mid-batch.log"
    )
    worker_pool.started.append(worker)  # stopped with the pool; replaced once dead
    worker.wait_ready()
    publisher = Publisher(private_redis.url)
    try:
        jobs = [OutboundMessage(j, SEND_WELCOME_EMAIL) for j in job_ids]
        assert publisher.publish(jobs) == count
    finally:
        publisher.reset()

    async def all_lanes_stalled() -> bool:
        return mail_behaviour.stall_count == JOB_LANES

    await eventually(all_lanes_stalled, 15, "every lane to be stuck in a send")
    [child] = worker.pool_children()
    os.kill(child, signal.SIGKILL)
    mail_behaviour.stall_ids.clear()

    try:
        rows = [await wait_status(committed_db, j, "succeeded", timeout=30) for j in job_ids]
    finally:
        worker.kill()
    # Only the jobs in flight lost a run: each job is claimed when it starts.
    assert [r["deliveries"] for r in rows] == [1] + [2] * JOB_LANES + [1]
    assert [r["attempts"] for r in rows] == [1] * count
    for message_id, user in zip(message_ids, users):
        sent = mailbox.received(message_id)
        assert len(sent) == 1 and sent[0]["To"] == user["email"]


async def test_whole_worker_killed_mid_send_sweep_redelivers_once(
    committed_client: Any,
    committed_db: Any,
    worker: Any,
    worker_pool: Any,
    mailbox: TestSmtpHandler,
    mail_behaviour: MailBehaviour,
) -> None:
    first = worker
    mail_behaviour.stall_ids.add(STALL_ALL)
    user = await sign_up(committed_client)
    job_id = await welcome_job_id(committed_db, user["id"])
    message_id = await message_id_of(committed_db, job_id)
    await asyncio.get_running_loop().run_in_executor(None, mail_behaviour.stalled.wait, 15)
    first.kill_everything()
    mail_behaviour.stall_ids.discard(STALL_ALL)

    worker_pool.start_new()  # kombu would redeliver only after the visibility timeout
    done = await wait_status(committed_db, job_id, "succeeded", timeout=30)
    assert done["deliveries"] == 2
    assert len(mailbox.received(message_id)) == 1


async def test_job_that_keeps_killing_its_worker_is_dead_after_three_deliveries(
    committed_client: Any,
    committed_db: Any,
    worker: Any,
    mailbox: TestSmtpHandler,
    mail_behaviour: MailBehaviour,
) -> None:
    user = await sign_up(committed_client)
    job_id = await welcome_job_id(committed_db, user["id"])
    message_id = await message_id_of(committed_db, job_id)
    mail_behaviour.stall_ids.add(message_id)
    loop = asyncio.get_running_loop()
    for delivery in range(1, 4):
        await loop.run_in_executor(None, mail_behaviour.stalled.wait, 15)
        assert mail_behaviour.stall_count == delivery
        mail_behaviour.stalled.clear()
        [child] = worker.pool_children()
        os.kill(child, signal.SIGKILL)

    dead = await wait_status(committed_db, job_id, "dead", timeout=30)
    assert dead["deliveries"] == 3 and "worker lost" in dead["last_error"]
    assert mailbox.received(message_id) == []


async def test_redis_restart_during_sign_ups_loses_no_welcome_email(
    committed_client: Any,
    committed_db: Any,
    worker: Any,
    mailbox: TestSmtpHandler,
    private_redis: RedisServer,
) -> None:
    users: List[Dict[str, Any]] = [await sign_up(committed_client) for _ in range(5)]
    private_redis.stop()
    users += [await sign_up(committed_client) for _ in range(10)]
    private_redis.start()
    users += [await sign_up(committed_client) for _ in range(5)]

    job_ids = [await welcome_job_id(committed_db, u["id"]) for u in users]
    for job_id in job_ids:
        await wait_status(committed_db, job_id, "succeeded", timeout=40)
    for job_id, user in zip(job_ids, users):
        sent = mailbox.received(await message_id_of(committed_db, job_id))
        assert len(sent) == 1 and sent[0]["To"] == user["email"]
    assert len(mailbox.received()) == len(users)


async def test_failing_smtp_retries_then_dead_then_api_retry_delivers(
    committed_client: Any,
    committed_db: Any,
    worker: Any,
    mailbox: TestSmtpHandler,
    mail_behaviour: MailBehaviour,
) -> None:
    admin = await make_superuser(committed_db, committed_client)
    mail_behaviour.fail_code = 451
    user = await sign_up(committed_client)
    job_id = await welcome_job_id(committed_db, user["id"])

    dead = await wait_status(committed_db, job_id, "dead", timeout=30)
    assert dead["attempts"] == 4 and "451" in dead["last_error"]
    assert mailbox.refused >= 4

    listed = await committed_client.get("/api/jobs", params={"status": "dead"}, headers=admin)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert job_id in [j["id"] for j in items] and {j["status"] for j in items} == {"dead"}

    mail_behaviour.fail_code = None
    retried = await committed_client.post(f"/api/jobs/{job_id}/retry", headers=admin)
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    await wait_status(committed_db, job_id, "succeeded")
    assert len(mailbox.received(await message_id_of(committed_db, job_id))) == 1

    again = await committed_client.post(f"/api/jobs/{job_id}/retry", headers=admin)
    assert again.status_code == 409


async def test_permanent_smtp_refusal_is_dead_without_retries(
    committed_client: Any,
    committed_db: Any,
    worker: Any,
    mailbox: TestSmtpHandler,
    mail_behaviour: MailBehaviour,
) -> None:
    mail_behaviour.fail_code = 550
    user = await sign_up(committed_client)
    job_id = await welcome_job_id(committed_db, user["id"])
    dead = await wait_status(committed_db, job_id, "dead")
    assert dead["attempts"] == 1 and "550" in dead["last_error"]
    assert mailbox.received() == []
