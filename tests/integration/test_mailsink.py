"""The SMTP sink stops completely: open sessions end and its loop closes."""

from __future__ import annotations

import smtplib
import socket

from app.dev.mailsink import MailSink, StoringHandler


def test_stop_ends_open_sessions_and_closes_the_loop() -> None:
    sink = MailSink(StoringHandler()).start()
    client = smtplib.SMTP(*sink.address, timeout=30)  # timeout: hang guard
    client.ehlo()  # a session left open, as a pooled client leaves it
    sink.stop()
    # Nothing is left pending on a loop that would only be torn down at
    # interpreter exit, where asyncio can no longer report it.
    assert sink._loop.is_closed()
    # The session was ended by the sink: the next command finds the
    # connection closed instead of waiting on a server that stopped.
    try:
        code, _ = client.noop()
    except (smtplib.SMTPServerDisconnected, ConnectionError, socket.timeout):
        code = -1
    assert code == -1
    client.close()
