"""A local SMTP server that keeps what it receives (aiosmtpd).

A process with SMTP_HOST unset starts one on demand (`embedded_mail_sink`),
writing each message as an .eml file under `<data dir>/mail/`. Tests and
benchmarks use `MailSink` with their own handlers.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import uuid
import weakref
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from aiosmtpd.smtp import SMTP, Envelope, Session

logger = logging.getLogger(__name__)


class StoringHandler:
    """Accepts every message; keeps it in memory and, given a folder, on disk."""

    def __init__(self, folder: Optional[Path] = None, keep_in_memory: bool = True) -> None:
        self.folder = folder
        self.keep_in_memory = keep_in_memory
        self.messages: List[EmailMessage] = []
        self.count = 0
        self._lock = threading.Lock()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        if self.folder is not None:
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
            (self.folder / name).write_bytes(data)
        with self._lock:
            self.count += 1
            if self.keep_in_memory:
                self.messages.append(message_from_bytes(data, policy=policy.default))
        return "250 Message accepted for delivery"

    def message_ids(self) -> List[str]:
        with self._lock:
            return [str(m["Message-ID"]) for m in self.messages]


class MailSink:
    """An aiosmtpd server on its own thread and event loop."""

    def __init__(self, handler: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._server: Optional[asyncio.AbstractServer] = None
        # Weak: a session that has hung up is forgotten with its connection.
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._thread = threading.Thread(target=self._run, name="mail-sink", daemon=True)

    @property
    def native_id(self) -> int:
        """The OS id of the sink's thread (for CPU accounting)."""
        return self._thread.native_id or 0

    @property
    def address(self) -> Tuple[str, int]:
        return self.host, self.port

    def _run(self) -> None:
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def start(self) -> MailSink:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def _session(self) -> SMTP:
        session = SMTP(self.handler, hostname="keel-sink", enable_SMTPUTF8=True)
        self._sessions.add(session)
        return session

    async def _serve(self) -> None:
        self._server = await self._loop.create_server(self._session, host=self.host, port=self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop listening, end every open SMTP session and close the loop (a
        session left pending would be destroyed noisily at interpreter exit)."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                # Since Python 3.12 wait_closed() also waits for every client
                # to hang up, and a mailer keeps its connection open: end them.
                for session in list(self._sessions):
                    if session.transport is not None:
                        session.transport.close()
                self._sessions.clear()
                await self._server.wait_closed()
            sessions = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in sessions:
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


_sinks: Dict[str, MailSink] = {}
_sinks_lock = threading.Lock()


def mail_folder(data_dir: Path) -> Path:
    return (data_dir / "mail").resolve()


def stop_mail_sinks() -> None:
    """Stop every sink `embedded_mail_sink` started (also run at exit)."""
    with _sinks_lock:
        sinks = list(_sinks.values())
        _sinks.clear()
    for sink in sinks:
        sink.stop()


def embedded_mail_sink(data_dir: Path, port: int = 0) -> MailSink:
    """This process's sink storing mail under `<data_dir>/mail` (started once,
    stopped at exit)."""
    folder = mail_folder(data_dir)
    with _sinks_lock:
        sink = _sinks.get(str(folder))
        if sink is None:
            if not _sinks:
                atexit.register(stop_mail_sinks)
            sink = MailSink(StoringHandler(folder, keep_in_memory=False), port=port).start()
            _sinks[str(folder)] = sink
            logger.info("embedded SMTP sink on %s:%d storing mail in %s", *sink.address, folder)
        return sink
