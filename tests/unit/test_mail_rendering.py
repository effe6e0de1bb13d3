from __future__ import annotations

from email import message_from_bytes, policy
from email.mime.text import MIMEText

import pytest

from app.core.config import Settings
from app.integrations.mailer import OutgoingEmail, render_message

SETTINGS = Settings(mail_from="keel <no-reply@keel.local>")


def parse(raw: bytes):  # type: ignore[no-untyped-def]
    return message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)


def test_rendered_ascii_message_round_trips_headers_and_body() -> None:
    email = OutgoingEmail(
        to="a@example.com", subject="Hi there", body="Body text\n", message_id="<j-1@k>"
    )
    raw = render_message(email, SETTINGS)
    assert raw is not None and b"\r\n" in raw
    mail = parse(raw)
    assert mail["To"] == "a@example.com" and mail["Subject"] == "Hi there"
    assert mail["Message-ID"] == "<j-1@k>" and mail["From"] == "keel <no-reply@keel.local>"
    assert mail.get_content() == "Body text\n"


def test_rendered_non_ascii_subject_and_body_decode_back() -> None:
    body = "Hello Zoë,\n" + "x" * 2000 + "\n"
    email = OutgoingEmail(to="a@example.com", subject="Grüße", body=body, message_id="<j-2@k>")
    raw = render_message(email, SETTINGS)
    assert raw is not None and all(len(line) <= 998 for line in raw.split(b"\r\n"))
    mail = parse(raw)
    assert mail["Subject"] == "Grüße" and mail.get_content() == body


def test_long_ascii_lines_are_not_sent_as_7bit() -> None:
    body = "y" * 1500
    raw = render_message(OutgoingEmail("a@example.com", "s", body, "<j-3@k>"), SETTINGS)
    assert raw is not None and all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert parse(raw).get_content().rstrip("\n") == body


def test_non_ascii_address_is_left_to_the_smtputf8_path() -> None:
    assert render_message(OutgoingEmail("zoë@example.com", "s", "b", "<j-4@k>"), SETTINGS) is None


def test_subject_with_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        render_message(OutgoingEmail("a@example.com", "a\r\nBcc: x@y", "b", "<j-5@k>"), SETTINGS)


DATE = "Mon, 01 Jan 2024 00:00:00 GMT"


def reference(email: OutgoingEmail) -> bytes:
    """What the general (MIMEText) path makes of a plain ASCII message."""
    part = MIMEText(email.body, "plain", "us-ascii")
    part["From"] = SETTINGS.mail_from
    part["To"] = email.to
    part["Subject"] = email.subject
    part["Date"] = DATE
    part["Message-ID"] = email.message_id
    return part.as_bytes(policy=policy.compat32.clone(linesep="\r\n"))


@pytest.mark.parametrize(
    "subject, body",
    [
        ("Hi there", "Body text\n"),
        ("Mixed", "one\r\ntwo\rthree\n\nfour"),
        ("No final newline", "text"),
        ("Dots and From", ".\n.leading dot\nFrom me\n"),
        ("Empty body", ""),
        ("Odd whitespace  \tin it", "a\x0bb\x0cc\n"),
        ("x" * 69, "longest subject that needs no folding\n"),
        ("x" * 70, "folded subject: the general path\n"),
        ("word " * 30, "folded at spaces\n"),
    ],
)
def test_plain_ascii_messages_are_byte_identical_to_the_general_path(
    subject: str, body: str
) -> None:
    email = OutgoingEmail("a@example.com", subject, body, "<job-7.20240101@keel.local>")
    assert render_message(email, SETTINGS, date=DATE) == reference(email)
