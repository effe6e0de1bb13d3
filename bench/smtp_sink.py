"""A lean SMTP server for the email benchmark, run in its own process.

It speaks real SMTP over TCP (EHLO/HELO, MAIL, RCPT, DATA with the
dot-terminated body, RSET, NOOP, QUIT; PIPELINING and 8BITMIME advertised)
and counts the messages it accepted, with a fraction of aiosmtpd's CPU per
message: the sink stands in for a mail server on another machine, so its
cost should not crowd out the system being measured. It does no address
or header checks: it accepts everything it can parse.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any, List, Optional, Tuple

_GREETING = b"220 bench-sink ESMTP\r\n"
_EHLO = b"250-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 33554432\r\n"


class _Session(asyncio.Protocol):
    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.buffer = b""
        self.in_data = False
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(_GREETING)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies: List[bytes] = []
        closing = False
        while True:
            if self.in_data:
                # The body ends with CRLF.CRLF (a body line "." would be "..").
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                self.buffer = self.buffer[end + 5 :]
                self.in_data = False
                with self.counter.get_lock():
                    self.counter.value += 1
                replies.append(b"250 2.0.0 OK\r\n")
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                break
            line = self.buffer[:line_end]
            self.buffer = self.buffer[line_end + 2 :]
            reply, closing = self._command(line)
            replies.append(reply)
            if closing:
                break
        assert self.transport is not None
        if replies:
            # Pipelined commands get their replies in one write.
            self.transport.write(b"".join(replies))
        if closing:
            self.transport.close()

    def _command(self, line: bytes) -> Tuple[bytes, bool]:
        verb = line[:4].upper()
        if verb == b"EHLO":
            return _EHLO, False
        if verb == b"HELO":
            return b"250 bench-sink\r\n", False
        if verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            return b"250 2.1.0 OK\r\n", False
        if verb == b"DATA":
            self.in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>\r\n", False
        if verb == b"QUIT":
            return b"221 2.0.0 Bye\r\n", True
        return b"502 5.5.2 Command not implemented\r\n", False


def _serve(port_out: Any, counter: Any, ready: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Session(counter), "127.0.0.1", 0)
        port_out.value = server.sockets[0].getsockname()[1]
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class SinkProcess:
    """The sink in a child process; `count` is what it has accepted so far."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self._counter = context.Value("q", 0)
        self._port = context.Value("i", 0)
        ready = context.Event()
        self.process = context.Process(
            target=_serve, args=(self._port, self._counter, ready), daemon=True
        )
        self.process.start()
        if not ready.wait(10):
            raise RuntimeError("SMTP sink did not start")
        self.host = "127.0.0.1"
        self.port = int(self._port.value)

    @property
    def count(self) -> int:
        return int(self._counter.value)

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)
