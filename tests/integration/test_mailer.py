"""The SMTP adapter against a real SMTP server (aiosmtpd on loopback): the
message arrives intact, connections are reused, and failures are classified
as transient or permanent."""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy
from typing import Any, Iterator, List

import pytest

from app.core.config import Settings
from app.dev.mailsink import MailSink
from app.integrations.mailer import (
    Mailer,
    MailPermanentError,
    MailTransientError,
    OutgoingEmail,
)


class Recorder:
    """Keeps what it accepts, and the sessions (connections) that sent it."""

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse
        self.messages: List[Any] = []
        self.sessions: List[int] = []
        self.envelopes: List[Any] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse.startswith("rcpt"):
            return "550 5.1.1 No such user" if self.refuse == "rcpt550" else "450 4.2.0 Busy"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse == "data451":
            return "451 4.3.0 Try later"
        if self.refuse == "silent":
            await asyncio.Event().wait()  # never answers: the connection stays open
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
        self.sessions.append(id(session))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder()


def mailer_for(sink: MailSink, timeout: float = 10) -> Mailer:
    host, port = sink.address
    return Mailer(
        Settings(
            smtp_host=host,
            smtp_port=port,
            mail_from="keel <no-reply@keel.local>",
            smtp_timeout_seconds=timeout,
        )
    )


def email(n: int, body: str = "Hello\n.leading dot\n") -> OutgoingEmail:
    return OutgoingEmail(
        to=f"user{n}@example.com", subject=f"Hi {n}", body=body, message_id=f"<job-{n}@keel>"
    )


async def test_messages_arrive_intact_over_one_reused_connection(recorder: Recorder) -> None:
    sink = MailSink(recorder).start()
    mailer = mailer_for(sink)
    try:
        for n in range(3):
            await mailer.send(email(n))
    finally:
        await mailer.close()
        sink.stop()
    assert [m["Message-ID"] for m in recorder.messages] == [
        "<job-0@keel>",
        "<job-1@keel>",
        "<job-2@keel>",
    ]
    assert recorder.envelopes[1] == ("no-reply@keel.local", ["user1@example.com"])
    # Dot-stuffing undone by the server: the body is what was sent.
    content = recorder.messages[2].get_content().replace("\r\n", "\n")
    assert content == "Hello\n.leading dot\n"
    assert len(set(recorder.sessions)) == 1


async def test_non_ascii_recipient_falls_back_to_smtputf8(recorder: Recorder) -> None:
    sink = MailSink(recorder).start()
    mailer = mailer_for(sink)
    try:
        await mailer.send(
            OutgoingEmail(to="zoë@example.com", subject="Grüße", body="Hallo\n", message_id="<j@k>")
        )
    finally:
        await mailer.close()
        sink.stop()
    assert recorder.envelopes == [("no-reply@keel.local", ["zoë@example.com"])]


@pytest.mark.parametrize(
    "refuse, error",
    [
        ("rcpt550", MailPermanentError),
        ("rcpt450", MailTransientError),
        ("data451", MailTransientError),
    ],
)
async def test_refusals_are_classified_and_the_connection_is_not_reused(
    recorder: Recorder, refuse: str, error: type
) -> None:
    recorder.refuse = refuse
    sink = MailSink(recorder).start()
    mailer = mailer_for(sink)
    try:
        with pytest.raises(error):
            await mailer.send(email(1))
        assert mailer._idle == []
        recorder.refuse = ""
        await mailer.send(email(2))
    finally:
        await mailer.close()
        sink.stop()
    assert [m["Message-ID"] for m in recorder.messages] == ["<job-2@keel>"]


async def test_unresponsive_server_is_a_transient_error(recorder: Recorder) -> None:
    """The server stops answering in the middle of a reused connection."""
    sink = MailSink(recorder).start()
    mailer = mailer_for(sink, timeout=0.5)
    try:
        await mailer.send(email(1))
        recorder.refuse = "silent"
        with pytest.raises(MailTransientError):
            await mailer.send(email(2))
    finally:
        await mailer.close()
        sink.stop()


async def test_server_stopped_with_a_connection_open_is_a_transient_error(
    recorder: Recorder,
) -> None:
    """Stopping the sink ends its open connections (waiting for the client to
    hang up first would hang: a pooled connection stays open), and the next
    send finds no server."""
    sink = MailSink(recorder).start()
    mailer = mailer_for(sink, timeout=0.5)
    try:
        await mailer.send(email(1))
        sink.stop()
        assert not sink._thread.is_alive()
        with pytest.raises(MailTransientError):
            await mailer.send(email(2))
    finally:
        await mailer.close()
