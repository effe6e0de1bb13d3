"""The bytes of an uploaded CSV, checked (`CheckedStream`), their header cut
off (`read_start`, `split_header`) and handed to pyarrow (`ArrowSource`)."""

from __future__ import annotations

import codecs
import csv
import io
import re
import threading
from collections import Counter, deque
from typing import Callable, Deque, List, Optional, Tuple, Union

import numpy as np

from app.ingestion.errors import InvalidCsv

# pyarrow parses whole blocks: the longest row (and the header) must fit in one.
BLOCK_SIZE = 1 << 20

PieceReader = Callable[[], Optional[bytes]]


class CheckedStream:
    """Pulls pieces and checks each as it arrives: UTF-8 and no NUL bytes,
    reporting the line (counted over the whole file) of the first bad byte."""

    def __init__(self, read_piece: PieceReader) -> None:
        self._read_piece = read_piece
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._lines_before = 0
        self._mid_character = False

    def pull(self) -> Optional[bytes]:
        piece = self._read_piece()
        if piece is None:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise InvalidCsv(
                    f"The file is not valid UTF-8: it ends inside a character "
                    f"(line {self._lines_before + 1})"
                ) from None
            return None
        self.check(piece)
        return piece

    def pull_unchecked(self) -> Optional[bytes]:
        """The next piece as is (for sniffing the file type); call check() on it."""
        return self._read_piece()

    def check(self, piece: bytes) -> None:
        nul = piece.find(b"\x00")
        if nul >= 0:
            raise InvalidCsv(
                f"The file contains binary data (a NUL byte on line {self._line_at(piece, nul)}); "
                "upload a plain-text CSV file encoded as UTF-8"
            )
        # An ASCII piece is valid UTF-8 unless a character started in the
        # previous piece is still open; isascii() is far cheaper than decoding.
        if self._mid_character or not piece.isascii():
            try:
                self._decoder.decode(piece)
            except UnicodeDecodeError as exc:
                raise InvalidCsv(
                    f"The file is not valid UTF-8 (invalid byte on line "
                    f"{self._line_at(piece, max(exc.start, 0))}); save it as UTF-8 and upload again"
                ) from None
            self._mid_character = bool(self._decoder.getstate()[0])
        self._lines_before += int(np.count_nonzero(np.frombuffer(piece, dtype=np.uint8) == 10))

    def _line_at(self, piece: bytes, offset: int) -> int:
        return self._lines_before + piece.count(b"\n", 0, offset) + 1


def read_start(stream: CheckedStream) -> bytes:
    """First bytes of the file, after sniffing formats that are not CSV text
    (checked before UTF-8 so the message names the real problem)."""
    head = bytearray()
    while len(head) < 4:
        piece = stream.pull_unchecked()
        if piece is None:
            break
        head += piece
    if not head:
        raise InvalidCsv("The file is empty")
    data = bytes(head)
    if data.startswith(b"\x1f\x8b"):
        raise InvalidCsv("The file is gzip-compressed; upload the uncompressed CSV")
    if data.startswith(b"PK\x03\x04"):
        raise InvalidCsv("The file is a ZIP archive (an Excel workbook?); export it as CSV")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InvalidCsv("The file is UTF-16 encoded; save it as UTF-8 and upload again")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    stream.check(data)
    return data


def split_header(stream: CheckedStream, head: bytes) -> Tuple[bytes, bytes, int]:
    """(header record bytes, the bytes after it, the header's row number).
    Skips leading blank lines as pandas does; quoted newlines are allowed."""
    buf = bytearray(head)
    eof = False
    header_row = 1
    while True:
        while buf[:1] in (b"\n", b"\r") and (eof or len(buf) > 1):
            del buf[: 2 if buf[:2] == b"\r\n" else 1]
            header_row += 1
        end = _record_end(buf) if buf[:1] not in (b"\n", b"\r") else None
        if end is not None:
            start, after = end
            # A "\r" at the end of what arrived so far may be half of "\r\n".
            if eof or after < len(buf) or buf[start : start + 1] == b"\n":
                return bytes(buf[:start]), bytes(buf[after:]), header_row
        if eof:
            if not buf.strip(b"\r\n"):
                raise InvalidCsv("The file has no header row (it contains only blank lines)")
            return bytes(buf), b"", header_row
        if len(buf) > BLOCK_SIZE:
            raise InvalidCsv(
                f"The header row is longer than {BLOCK_SIZE // 1024} KiB (is this a CSV file?)"
            )
        piece = stream.pull()
        if piece is None:
            eof = True
        else:
            buf += piece


_QUOTE_OR_NEWLINE = re.compile(rb'["\r\n]')


def _record_end(buf: bytearray) -> Optional[Tuple[int, int]]:
    """(start, end) of the line break ending the first record, quotes respected."""
    in_quotes = False
    for match in _QUOTE_OR_NEWLINE.finditer(buf):
        char = match.group()
        if char == b'"':
            in_quotes = not in_quotes
        elif not in_quotes:
            start = match.start()
            if char == b"\r" and buf[start + 1 : start + 2] == b"\n":
                return start, start + 2
            return start, start + 1
    return None


def column_names(header: bytes) -> List[str]:
    text = header.decode("utf-8")
    try:
        row = next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error as exc:
        raise InvalidCsv(f"The header row is malformed: {exc}") from None
    names = [name if name else f"Unnamed: {index}" for index, name in enumerate(row)]
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        raise InvalidCsv(f"Duplicate column names in the header: {', '.join(duplicates)}")
    return names


# pyarrow reads ahead on its I/O thread as far as the bytes allow: read()
# waits once it is this many blocks ahead of the batches consumed (enough to
# ride out the parsing thread's pauses); the timeout guarantees progress.
READ_AHEAD_BLOCKS = 4
READ_AHEAD_WAIT = 0.5


class ArrowSource:
    """The file-like object pyarrow reads the data rows from. The pieces are
    kept as they arrived and joined once per block (one copy)."""

    closed = False

    def __init__(self, stream: CheckedStream, first: bytes) -> None:
        self._stream = stream
        self._pieces: Deque[Union[bytes, memoryview]] = deque([first] if first else [])
        self._buffered = len(first)
        self._eof = False
        self.error: Optional[BaseException] = None
        self._progress = threading.Condition()
        self._blocks_read = 0
        self._batches_done = 0

    def batch_done(self) -> None:
        with self._progress:
            self._batches_done += 1
            self._progress.notify_all()

    def _ahead(self) -> bool:
        return self._blocks_read - self._batches_done < READ_AHEAD_BLOCKS

    def at_eof(self) -> bool:
        """True when nothing but line breaks follows the header."""
        while not self._eof and self._only_line_breaks():
            if self._buffered > BLOCK_SIZE:
                # Blank lines only so far: keep memory bounded.
                self._pieces = deque([bytes(self._pieces[-1])[-1:]])
                self._buffered = 1
            self._fill()
        return self._only_line_breaks()

    def _only_line_breaks(self) -> bool:
        return not any(bytes(piece).strip(b"\r\n") for piece in self._pieces)

    def _fill(self) -> None:
        try:
            piece = self._stream.pull()
        except BaseException as exc:
            self.error = exc
            raise
        if piece is None:
            self._eof = True
        else:
            self._pieces.append(piece)
            self._buffered += len(piece)

    def read(self, size: int = -1) -> bytes:
        with self._progress:
            self._progress.wait_for(self._ahead, timeout=READ_AHEAD_WAIT)
            self._blocks_read += 1
        while not self._eof and (size < 0 or self._buffered < size):
            self._fill()
        if size < 0 or size >= self._buffered:
            parts = list(self._pieces)
            self._pieces.clear()
            self._buffered = 0
        else:
            parts = []
            wanted = size
            while wanted:
                piece = self._pieces.popleft()
                if len(piece) > wanted:
                    view = memoryview(piece)
                    self._pieces.appendleft(view[wanted:])
                    piece = view[:wanted]
                parts.append(piece)
                wanted -= len(piece)
            self._buffered -= size
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
