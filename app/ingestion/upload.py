"""Streaming multipart upload: bytes go from the socket to the parsing thread
through a bounded channel, counted against the limit as they arrive.

Nothing is spooled to disk or memory beyond the channel's capacity
(`CHANNEL_PIECES` x `PIECE_BYTES`): when the parser falls behind, we stop
reading the socket and TCP flow control slows the client down.
"""

from __future__ import annotations

import asyncio
import queue
from typing import Callable, List, Optional

from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Message, Receive

from app.core.middleware import BodyTooLarge
from app.ingestion.errors import (
    FileTooLarge,
    InvalidMultipart,
    UploadIncomplete,
    UploadTimeout,
)

FILE_FIELD = "file"
PIECE_BYTES = 256 * 1024
CHANNEL_PIECES = 8
# Part headers are tiny; a client streaming endless header bytes is refused.
MAX_PART_HEADER_BYTES = 16 * 1024


class UploadAborted(Exception):
    """Raised in the parsing thread when the request side gave up."""


_END = object()
_ABORT = object()


class ByteChannel:
    """Bounded hand-off of byte pieces from the event loop to one thread.
    The thread wakes the loop only when the producer waits for room (a
    wake-up per piece costs the loop). After `consumer_done()` the producer
    discards its pieces."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int = CHANNEL_PIECES) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._capacity = capacity
        self._room = asyncio.Event()
        self._producer_waiting = False
        self._consumer_done = False

    # -- event loop side
    async def put(self, piece: bytes) -> None:
        while not self._consumer_done and self._queue.qsize() >= self._capacity:
            self._room.clear()
            self._producer_waiting = True
            # Checked again after raising the flag: a piece taken in between
            # would not have seen it.
            if self._queue.qsize() < self._capacity:
                self._producer_waiting = False
                break
            await self._room.wait()
        if self._consumer_done:
            return
        self._queue.put(piece)

    def close(self) -> None:
        self._queue.put(_END)

    def abort(self) -> None:
        self._queue.put(_ABORT)

    def _mark_consumer_done(self) -> None:
        self._consumer_done = True
        self._room.set()

    def _make_room(self) -> None:
        self._producer_waiting = False
        self._room.set()

    # -- thread side
    def read_piece(self) -> Optional[bytes]:
        """The next piece, None at the end; raises UploadAborted."""
        item = self._queue.get()
        if item is _ABORT:
            raise UploadAborted()
        if item is _END:
            return None
        if self._producer_waiting:
            self._loop.call_soon_threadsafe(self._make_room)
        assert isinstance(item, bytes)
        return item

    def consumer_done(self) -> None:
        """Called by the thread when it stops reading, for whatever reason."""
        self._loop.call_soon_threadsafe(self._mark_consumer_done)


def missing_file_error() -> RequestValidationError:
    """The same 422 FastAPI gives for a missing `UploadFile` form field."""
    return RequestValidationError(
        [{"type": "missing", "loc": ("body", FILE_FIELD), "msg": "Field required", "input": None}]
    )


def multipart_boundary(content_type: Optional[str]) -> bytes:
    """The boundary of a multipart/form-data body; 422 (no `file` field) otherwise."""
    if not content_type:
        raise missing_file_error()
    media_type, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise missing_file_error()
    return boundary


class FilePartReader:
    """Feeds the body of a multipart request to python-multipart and the data
    of the first `file` part to a channel, counting the file's bytes."""

    def __init__(
        self,
        boundary: bytes,
        channel: ByteChannel,
        max_file_bytes: int,
        on_file_start: Callable[[], None],
    ) -> None:
        self.channel = channel
        self.max_file_bytes = max_file_bytes
        self.file_bytes = 0
        self.found_file = False
        self._on_file_start = on_file_start
        self._in_file = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._is_file_part = False
        self._header_bytes = 0
        self._pending: List[bytes] = []
        self._pending_bytes = 0
        self._ready: List[bytes] = []
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    async def feed(self, body: bytes) -> None:
        try:
            self._parser.write(body)
        except MultipartParseError as exc:
            raise InvalidMultipart(f"Malformed multipart body: {exc}") from None
        if self.file_bytes > self.max_file_bytes:
            raise FileTooLarge(f"The file exceeds the upload limit of {self.max_file_bytes} bytes")
        await self._send_ready()

    async def finish(self) -> None:
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise InvalidMultipart(f"Malformed multipart body: {exc}") from None
        if self._in_file:
            raise InvalidMultipart("The multipart body ended inside the file part")
        await self._send_ready()

    async def _send_ready(self) -> None:
        ready, self._ready = self._ready, []
        for piece in ready:
            if piece:
                await self.channel.put(piece)
            else:
                self.channel.close()

    # -- python-multipart callbacks (synchronous)
    def _on_part_begin(self) -> None:
        self._is_file_part = False
        self._header_bytes = 0

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise InvalidMultipart("Multipart part headers are too long")

    def _on_header_end(self) -> None:
        if bytes(self._header_field).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(self._header_value))
            if options.get(b"name") == FILE_FIELD.encode() and not self.found_file:
                self._is_file_part = True
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        if self._is_file_part:
            self.found_file = True
            self._in_file = True
            self._on_file_start()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return
        size = end - start
        self.file_bytes += size
        if self.file_bytes > self.max_file_bytes:
            return  # feed() raises FileTooLarge once write() returns
        self._pending.append(data[start:end])
        self._pending_bytes += size
        if self._pending_bytes >= PIECE_BYTES:
            self._flush_pending()

    def _on_part_end(self) -> None:
        if self._in_file:
            self._flush_pending()
            self._in_file = False
            self._ready.append(b"")  # marks the end of the file for the caller

    def _flush_pending(self) -> None:
        if self._pending:
            self._ready.append(b"".join(self._pending))
            self._pending = []
            self._pending_bytes = 0


class TimedReceive:
    """ASGI receive() with a timeout per message: a client silent for
    `timeout` seconds is cut off (UploadTimeout). A timer that cancels the
    waiting task, not asyncio.wait_for, which wraps each receive() in a new
    task (more event-loop turns per piece of body)."""

    def __init__(self, receive: Receive, timeout: float) -> None:
        self._receive = receive
        self._timeout = timeout
        self._expired = False

    async def __call__(self) -> Message:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        timer = loop.call_later(self._timeout, self._expire, task)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self._expired:
                raise
            raise UploadTimeout() from None
        except BodyTooLarge:
            raise FileTooLarge("The request body exceeds the upload limit") from None
        finally:
            timer.cancel()
        if message["type"] == "http.disconnect":
            raise UploadIncomplete()
        return message

    def _expire(self, task: asyncio.Task[None]) -> None:
        self._expired = True
        task.cancel()
