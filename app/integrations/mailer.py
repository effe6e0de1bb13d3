"""SMTP adapter: persistent aiosmtplib connections, reused (per process and event loop).

Errors are split by what a caller should do about them: `MailTransientError`
(connection trouble, timeouts, 4xx replies: try again later) and
`MailPermanentError` (5xx replies: retrying will not help).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.mime.text import MIMEText
from email.utils import formatdate, parseaddr
from functools import lru_cache
from typing import List, Optional, Tuple

import aiosmtplib

from app.core.config import Settings, get_settings

logger = logging.getLogger(__name__)


class MailError(Exception):
    """Sending failed."""


class MailTransientError(MailError):
    """The server could not take the message now; the same send may succeed later."""


class MailPermanentError(MailError):
    """The server refused the message for good (5xx)."""


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    body: str
    message_id: str


@lru_cache(maxsize=8)
def _address(mailbox: str) -> str:
    return parseaddr(mailbox)[1]


def mail_domain(settings: Settings) -> str:
    return _address(settings.mail_from).rpartition("@")[2] or "keel.local"


def build_message(email: OutgoingEmail, settings: Settings) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = email.message_id
    message.set_content(email.body)
    return message


_SMTP_COMPAT32 = policy.compat32.clone(linesep="\r\n")
_MAX_7BIT_LINE = 998
_MAX_UNFOLDED_HEADER = 78  # compat32 folds longer header lines
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_PLAIN_7BIT_HEAD = (
    'Content-Type: text/plain; charset="us-ascii"\r\n'
    "MIME-Version: 1.0\r\n"
    "Content-Transfer-Encoding: 7bit\r\n"
)


def render_message(
    email: OutgoingEmail, settings: Settings, date: Optional[str] = None
) -> Optional[bytes]:
    """The message as SMTP-ready bytes, built the cheap way (compat32 MIMEText,
    not EmailMessage's costly header registry). None when an address is not
    plain ASCII: `build_message` handles those (SMTPUTF8)."""
    if not (settings.mail_from.isascii() and email.to.isascii()):
        return None
    subject = email.subject
    if "\r" in subject or "\n" in subject:
        raise ValueError("header values may not contain line breaks")
    date = date or formatdate(usegmt=True)
    body = email.body
    seven_bit = body.isascii() and all(
        len(line) <= _MAX_7BIT_LINE for line in _LINE_BREAKS.split(body)
    )
    if seven_bit:
        fast = _render_plain_7bit(email, settings, date)
        if fast is not None:
            return fast
    part = MIMEText(body, "plain", "us-ascii" if seven_bit else "utf-8")  # else base64
    part["From"] = settings.mail_from
    part["To"] = email.to
    part["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    part["Date"] = date
    part["Message-ID"] = email.message_id
    return part.as_bytes(policy=_SMTP_COMPAT32)


def _render_plain_7bit(email: OutgoingEmail, settings: Settings, date: str) -> Optional[bytes]:
    """The common case (ASCII throughout, short header lines) written out
    directly: the same bytes as the MIMEText path for a fraction of the CPU
    (tests compare the two). None when a header would need folding or encoding."""
    headers = (
        ("From", settings.mail_from),
        ("To", email.to),
        ("Subject", email.subject),
        ("Date", date),
        ("Message-ID", email.message_id),
    )
    head = [_PLAIN_7BIT_HEAD]
    for name, value in headers:
        line = f"{name}: {value}"
        if len(line) > _MAX_UNFOLDED_HEADER or not value.isascii() or _LINE_BREAKS.search(value):
            return None
        head.append(line + "\r\n")
    head.append("\r\n")
    head.append("\r\n".join(_LINE_BREAKS.split(email.body)))
    return "".join(head).encode("ascii")


def smtp_address(settings: Settings) -> Tuple[str, int]:
    """SMTP_HOST/SMTP_PORT, or the embedded sink (started in this process on demand)."""
    if settings.smtp_host:
        return settings.smtp_host, settings.smtp_port or 25
    from app.dev.mailsink import embedded_mail_sink

    return embedded_mail_sink(settings.data_dir).address


def _classify(exc: Exception) -> MailError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        if codes and all(500 <= code < 600 for code in codes):
            return MailPermanentError(f"recipients refused: {codes}")
        return MailTransientError(f"recipients refused: {codes}")
    if isinstance(exc, aiosmtplib.SMTPResponseException) and 500 <= exc.code < 600:
        return MailPermanentError(f"SMTP {exc.code}: {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return MailTransientError(f"SMTP {exc.code}: {exc.message}")
    return MailTransientError(f"{type(exc).__name__}: {exc}")


class Mailer:
    """Sends messages over reused SMTP connections; reconnects when one drops.
    Each send takes an idle connection (or opens one) and gives it back: one
    connection per job in flight."""

    MAX_IDLE = 8

    def __init__(self, settings: Optional[Settings] = None) -> None:
        self.settings = settings or get_settings()
        self._idle: List[aiosmtplib.SMTP] = []

    async def _connect(self) -> aiosmtplib.SMTP:
        host, port = smtp_address(self.settings)
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            timeout=self.settings.smtp_timeout_seconds,
            use_tls=self.settings.smtp_use_tls,
            start_tls=False if not self.settings.smtp_use_tls else None,
        )
        await client.connect()
        if self.settings.smtp_username and self.settings.smtp_password:
            await client.login(self.settings.smtp_username, self.settings.smtp_password)
        return client

    async def _checkout(self) -> aiosmtplib.SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            client.close()
        return await self._connect()

    def _checkin(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and len(self._idle) < self.MAX_IDLE:
            self._idle.append(client)
        else:
            client.close()

    async def send(self, email: OutgoingEmail) -> None:
        """Hand one message to the SMTP server. Raises MailTransientError or
        MailPermanentError; on success the server has accepted the message."""
        raw = render_message(email, self.settings)
        message = build_message(email, self.settings) if raw is None else None
        client: Optional[aiosmtplib.SMTP] = None
        done = False
        try:
            client = await self._checkout()
            if raw is not None:
                await client.sendmail(_address(self.settings.mail_from), [email.to], raw)
            else:
                assert message is not None
                await client.send_message(message)
            done = True
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            raise _classify(exc) from exc
        finally:
            # After a failure or a cancellation (job timeout) the session's
            # state is unknown: never reuse it.
            if client is not None:
                if done:
                    self._checkin(client)
                else:
                    client.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    logger.debug("SMTP QUIT failed; closing anyway")
            client.close()


_mailer: Optional[Mailer] = None


def get_mailer() -> Mailer:
    """The process's mailer (created on first use, inside the worker's event loop)."""
    global _mailer
    if _mailer is None:
        _mailer = Mailer()
    return _mailer


async def close_mailer() -> None:
    global _mailer
    if _mailer is not None:
        await _mailer.close()
    _mailer = None
