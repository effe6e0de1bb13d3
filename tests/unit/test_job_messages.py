from __future__ import annotations

from app.jobs.publisher import MAX_JOBS_PER_MESSAGE, OutboundMessage, task_messages


def test_due_jobs_share_messages_per_kind_up_to_the_cap() -> None:
    count = MAX_JOBS_PER_MESSAGE + 2
    messages = [OutboundMessage(i, "emails.send") for i in range(count)]
    messages.insert(3, OutboundMessage(100, "users.send_welcome_email"))
    sent = sorted(task_messages(messages), key=lambda m: (m[0], m[1]))
    assert sent == [
        ("emails.send", list(range(MAX_JOBS_PER_MESSAGE)), None),
        ("emails.send", list(range(MAX_JOBS_PER_MESSAGE, count)), None),
        ("users.send_welcome_email", [100], None),
    ]


def test_delayed_retries_go_alone_with_their_countdown() -> None:
    messages = [
        OutboundMessage(1, "emails.send", countdown=2.5),
        OutboundMessage(2, "emails.send"),
        OutboundMessage(3, "emails.send", countdown=0.5),
        OutboundMessage(4, "emails.send"),
    ]
    assert list(task_messages(messages)) == [
        ("emails.send", [1], 2.5),
        ("emails.send", [3], 0.5),
        ("emails.send", [2, 4], None),
    ]


def test_every_job_is_sent_exactly_once() -> None:
    messages = [OutboundMessage(i, f"kind.{i % 3}") for i in range(50)]
    ids = [job_id for _, job_ids, _ in task_messages(messages) for job_id in job_ids]
    assert sorted(ids) == list(range(50))
