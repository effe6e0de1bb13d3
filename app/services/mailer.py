"""SMTP adapter: persistent aiosmtplib connections, reused (per process and event loop).

Errors are split by what a caller should do about them: `MailTransientError`
(connection trouble, timeouts, 4xx replies: try again later) and
`MailPermanentError` (5xx replies: retrying will not help).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from dataclasses import dataclass
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.mime.text import MIMEText
from email.utils import formatdate, parseaddr
from functools import lru_cache
from typing import Any, List, Optional, Tuple, Union

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
    """The message as SMTP-ready bytes, built the cheap way (compat32 MIMEText:
    about 4x less CPU than EmailMessage's header registry, which dominated a
    worker's per-email cost). Returns None when an address is not plain ASCII:
    `build_message` handles those (SMTPUTF8)."""
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
        if (
            len(line) > _MAX_UNFOLDED_HEADER
            or not value.isascii()
            or "\n" in value
            or "\r" in value
        ):
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


@lru_cache(maxsize=1)
def _local_hostname() -> str:
    return socket.getfqdn()


_BARE_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class PipeliningSession:
    """A plain-TCP SMTP session with a server that offers PIPELINING (RFC
    2920): MAIL, RCPT and DATA go out in one write and the body in a second,
    two round trips per message instead of four. aiosmtplib cannot read
    pipelined replies, and on this path the socket writes were most of a
    worker's CPU per email. Everything else (TLS, AUTH, servers without
    PIPELINING, non-ASCII addresses) goes through aiosmtplib.

    Failures raise aiosmtplib's exceptions (so they are classified alike);
    after one, the session must be closed, not reused."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> Optional[PipeliningSession]:
        """A session ready for mail, or None if the server does not offer PIPELINING."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        session = cls(reader, writer, timeout)
        ready = False
        try:
            code, message = await session._reply()
            if code != 220:
                raise aiosmtplib.SMTPConnectResponseError(code, message)
            writer.write(f"EHLO {_local_hostname()}\r\n".encode("ascii", "replace"))
            code, message = await session._reply()
            extensions = {line.split(" ", 1)[0].upper() for line in message.split("\n")[1:]}
            ready = code == 250 and "PIPELINING" in extensions
            if not ready:
                await session.quit()
            return session if ready else None
        finally:
            if not ready:
                session.close()

    @property
    def is_connected(self) -> bool:
        return not self._writer.is_closing()

    async def _reply(self) -> Tuple[int, str]:
        """One reply (all lines of a multiline one): code and text lines."""
        lines: List[str] = []
        while True:
            try:
                raw = await asyncio.wait_for(self._reader.readuntil(b"\n"), self._timeout)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                raise aiosmtplib.SMTPServerDisconnected(f"connection lost: {exc}") from exc
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit():
                raise aiosmtplib.SMTPResponseException(-1, f"malformed reply: {line[:100]!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    async def sendmail(self, sender: str, recipient: str, message: bytes) -> None:
        """One mail transaction; returns once the server accepted the message."""
        for address in (sender, recipient):
            if any(c in address for c in "\r\n<>"):
                raise aiosmtplib.SMTPResponseException(553, f"invalid address {address!r}")
        self._writer.write(
            f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode("ascii")
        )
        mail, rcpt, data = await self._reply(), await self._reply(), await self._reply()
        if mail[0] != 250:
            raise aiosmtplib.SMTPSenderRefused(mail[0], mail[1], sender)
        if rcpt[0] not in (250, 251):
            refused = aiosmtplib.SMTPRecipientRefused(rcpt[0], rcpt[1], recipient)
            raise aiosmtplib.SMTPRecipientsRefused([refused])
        if data[0] != 354:
            raise aiosmtplib.SMTPDataError(data[0], data[1])
        body = _LEADING_DOT.sub(b"..", _BARE_LINE_ENDS.sub(b"\r\n", message))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self._writer.write(body + b".\r\n")
        await asyncio.wait_for(self._writer.drain(), self._timeout)
        code, text = await self._reply()
        if code != 250:
            raise aiosmtplib.SMTPDataError(code, text)

    async def quit(self) -> None:
        try:
            self._writer.write(b"QUIT\r\n")
            await self._reply()
        finally:
            self.close()

    def close(self) -> None:
        self._writer.close()


class Mailer:
    """Sends messages over reused SMTP connections; reconnects when one drops.

    A connection carries one mail transaction at a time: each send takes an
    idle connection (or opens one) and gives it back when done, so a worker
    running several jobs at once holds one connection per job in flight and
    a worker running one job at a time reuses a single connection. Plain
    messages go through a PipeliningSession when the server offers it.
    """

    MAX_IDLE = 8

    def __init__(self, settings: Optional[Settings] = None) -> None:
        self.settings = settings or get_settings()
        self._idle: List[aiosmtplib.SMTP] = []
        self._idle_pipelining: List[PipeliningSession] = []
        # Learnt from the server's EHLO on first use (None: not asked yet).
        self._server_pipelines: Optional[bool] = None

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

    def _may_pipeline(self) -> bool:
        plain = not (self.settings.smtp_use_tls or self.settings.smtp_username)
        return plain and self._server_pipelines is not False

    async def _checkout_pipelining(self) -> Optional[PipeliningSession]:
        while self._idle_pipelining:
            session = self._idle_pipelining.pop()
            if session.is_connected:
                return session
            session.close()
        host, port = smtp_address(self.settings)
        opened = await PipeliningSession.open(host, port, self.settings.smtp_timeout_seconds)
        self._server_pipelines = opened is not None
        return opened

    async def _checkout(self) -> aiosmtplib.SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            client.close()
        return await self._connect()

    def _checkin(self, client: Union[aiosmtplib.SMTP, PipeliningSession]) -> None:
        idle: List[Any] = (
            self._idle_pipelining if isinstance(client, PipeliningSession) else self._idle
        )
        if client.is_connected and len(idle) < self.MAX_IDLE:
            idle.append(client)
        else:
            client.close()

    async def send(self, email: OutgoingEmail) -> None:
        """Hand one message to the SMTP server. Raises MailTransientError or
        MailPermanentError; on success the server has accepted the message."""
        raw = render_message(email, self.settings)
        message = build_message(email, self.settings) if raw is None else None
        sender = _address(self.settings.mail_from)
        client: Union[aiosmtplib.SMTP, PipeliningSession, None] = None
        done = False
        try:
            if raw is not None and self._may_pipeline():
                client = await self._checkout_pipelining()
            if isinstance(client, PipeliningSession):
                assert raw is not None
                await client.sendmail(sender, email.to, raw)
            else:
                client = await self._checkout()
                if raw is not None:
                    await client.sendmail(sender, [email.to], raw)
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
        idle: List[Any] = [*self._idle, *self._idle_pipelining]
        self._idle, self._idle_pipelining = [], []
        for client in idle:
            if client.is_connected:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
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
