"""Streaming CSV summary with the semantics of pandas `read_csv` + `describe()`.

Runs in a worker thread: it pulls byte pieces from a callable (the upload
channel) and never holds the file. The CSV is tokenized by pyarrow's streaming
reader (every column read as text, 1 MiB blocks); which columns are numeric is
then decided per token the way pandas' C parser decides it, so the summary
matches `pd.read_csv(file).describe()` on the kept rows.

Memory held per upload (see docs/api.md, "CSV ingestion"):
- a few 1 MiB blocks in flight (READ_AHEAD_BLOCKS, the current batch);
- at most 8 bytes per non-missing value of each numeric column in kept rows
  (exact quantiles need the values): integers take 1/2/4 bytes, decimals with
  few digits 4 bytes (`_compact`, checked to round-trip exactly), the rest
  float64; merged into 1 MiB segments to keep the heap unfragmented;
- 8 bytes per distinct email of each run of 128 Ki emails (64-bit digests,
  see app/ingestion/emails.py); at most MAX_EMAIL_TASKS batches of
  emails waiting to be hashed.
The summaries are computed one column at a time from the compact form, in
the work thread, after the distinct emails are counted.

Numeric-column rules (what pandas does with default options):
- missing: the exact tokens of pandas' default NA list (`""`, `NA`, `null`,
  `NaN`, `None`, ...); a column whose every value is missing is numeric
  (float64, count 0) as long as the file has data rows;
- numbers: ASCII whitespace around them is allowed, `inf`/`-infinity` spelled
  exactly (case-insensitive) are infinities, any other token (text, `True`,
  `1e500`, `NAN`) makes the whole column non-numeric;
- an all-integer column with values outside int64 (and not all within uint64)
  is text, as in pandas.
The column types are decided over all rows of the file; the statistics use
the kept rows only (rows with an empty email are dropped first).
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from app.core.cpu import use_every_cpu
from app.ingestion.emails import DistinctDigests, clean_emails, email_digests
from app.ingestion.errors import InvalidCsv, MissingColumns
from app.ingestion.segments import SEGMENT_BYTES, drain_into

REQUIRED_COLUMNS = ("id", "name", "email")
EMAIL_COLUMN = "email"

# pyarrow parses whole blocks: the longest row (and the header) must fit in one.
BLOCK_SIZE = 1 << 20

# pandas' default `na_values` (pandas._libs.parsers.STR_NA_VALUES); a unit
# test keeps this list equal to the installed pandas'.
PANDAS_NA_VALUES = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)
_INF_TOKENS = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
_ASCII_SPACE = " \t\n\r\x0b\x0c"
_INT_TOKEN = re.compile(r"^[ \t\n\r\x0b\x0c]*[+-]?[0-9]+[ \t\n\r\x0b\x0c]*$")
_INT_TOKEN_RE2 = r"^[ \t\n\r\x0b\x0c]*[+-]?[0-9]+[ \t\n\r\x0b\x0c]*$"
# Float64 cannot tell 2**63 - 1 from 2**63: look at the tokens near the edge.
_NEAR_INT64_EDGE = float(2**63 - 4096)

PieceReader = Callable[[], Optional[bytes]]


@dataclass
class ColumnStats:
    """One column of `describe()`; non-finite values are kept as float nan/inf."""

    count: int
    mean: float
    std: float
    min: float
    p25: float
    p50: float
    p75: float
    max: float


@dataclass
class CsvSummary:
    total_rows: int
    unique_emails: int
    summary: Dict[str, ColumnStats] = field(default_factory=dict)


def summarize_csv(read_piece: PieceReader) -> CsvSummary:
    """Summarize a CSV file delivered as byte pieces (`None` marks the end).

    Raises InvalidCsv (with the line or row where it can tell) for empty,
    compressed, binary, non-UTF-8, headerless or malformed files and
    MissingColumns when `id`, `name` or `email` is absent from the header.
    Any exception raised by `read_piece` propagates unchanged.
    """
    stream = _CheckedStream(read_piece)
    head = _read_start(stream)
    header_bytes, rest, header_row = _split_header(stream, head)
    names = _column_names(header_bytes)
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise MissingColumns(f"Missing required columns: {', '.join(missing)}")
    source = _ArrowSource(stream, rest)
    if source.at_eof():
        return CsvSummary(total_rows=0, unique_emails=0)
    return _Summarizer(names, header_row).run(source)


class _CheckedStream:
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
        # numpy counts line breaks ~3x faster than bytes.count (SIMD compare).
        self._lines_before += int(np.count_nonzero(np.frombuffer(piece, dtype=np.uint8) == 10))

    def _line_at(self, piece: bytes, offset: int) -> int:
        return self._lines_before + piece.count(b"\n", 0, offset) + 1


def _read_start(stream: _CheckedStream) -> bytes:
    """First bytes of the file, after sniffing formats that are not CSV text
    (checked before UTF-8 so the message names the real problem)."""
    stream_piece = stream.pull_unchecked()
    head = bytearray()
    while stream_piece is not None:
        head += stream_piece
        if len(head) >= 4:
            break
        stream_piece = stream.pull_unchecked()
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


def _split_header(stream: _CheckedStream, head: bytes) -> Tuple[bytes, bytes, int]:
    """(header record bytes, the bytes after it, the header's row number).

    Skips leading blank lines as pandas does; the header record may contain
    quoted newlines; it must fit in BLOCK_SIZE.
    """
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


def _column_names(header: bytes) -> List[str]:
    text = header.decode("utf-8")
    try:
        row = next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error as exc:
        raise InvalidCsv(f"The header row is malformed: {exc}") from None
    names = [name if name else f"Unnamed: {index}" for index, name in enumerate(row)]
    seen: Dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    duplicates = [name for name, count in seen.items() if count > 1]
    if duplicates:
        raise InvalidCsv(f"Duplicate column names in the header: {', '.join(duplicates)}")
    return names


# pyarrow's streaming reader reads ahead on its I/O thread (30+ blocks, i.e.
# 30+ MiB, if the bytes are there). read() makes it wait once it is this many
# blocks ahead of the batches consumed; the timeout only guarantees progress
# should pyarrow ever need more blocks to produce the next batch.
# 4 rather than 2: the reading side then rides out the parsing thread's
# pauses (~10% faster uploads, peak RSS within the measurement noise).
READ_AHEAD_BLOCKS = 4
READ_AHEAD_WAIT = 0.5


class _ArrowSource:
    """The file-like object pyarrow reads the data rows from. The pieces are
    kept as they arrived and joined once per block (one copy)."""

    closed = False

    def __init__(self, stream: _CheckedStream, first: bytes) -> None:
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


class _NumericColumn:
    """Decides whether one column is numeric (over every row) and keeps the
    values of the kept rows for the exact statistics."""

    def __init__(self) -> None:
        self.is_text = False
        self.all_int = True
        self.has_negative = False
        self.uint64_only = False
        self.beyond_int = False
        self.chunks: List[Union[np.ndarray, _Scaled]] = []
        self.recent: List[Union[np.ndarray, _Scaled]] = []
        self.recent_bytes = 0
        self.decimals_hint = 0
        self.batches = 0

    @property
    def is_numeric(self) -> bool:
        if self.is_text:
            return False
        return not (self.all_int and (self.beyond_int or (self.uint64_only and self.has_negative)))

    def mark_text(self) -> None:
        self.is_text = True
        self.chunks = []
        self.recent = []

    def add(self, tokens: pa.Array, keep: Optional[pa.Array]) -> None:
        if self.is_text:
            return
        values = self._plain_integers(tokens)
        if values is None:
            # The first batch is sniffed (a failing cast is slow) before a text
            # column is given up; later batches of a numeric column rarely fail.
            parsed = _parse_numbers(tokens) if self.batches or _may_be_numbers(tokens) else None
            if parsed is None:
                self.mark_text()
                return
            values, clean_tokens = parsed
            if not self._tokens_agree(tokens, values):
                self.mark_text()
                return
            if self.all_int:
                self._track_integers(clean_tokens, values)
        self.batches += 1
        if keep is not None:
            values = values.filter(keep)
        values = values.drop_null()
        if len(values):
            stored = _compact(values.to_numpy(zero_copy_only=False), self.decimals_hint)
            if isinstance(stored, _Scaled):
                self.decimals_hint = stored.decimals
            self._keep(stored)

    def _keep(self, stored: Union[np.ndarray, _Scaled]) -> None:
        """Batches give small arrays (~12k values); kept one by one between
        freed temporaries they fragment the heap (RSS grows by more than the
        data). Consecutive ones of one storage kind are merged into ~1 MiB
        segments, which malloc maps on their own."""
        kind = _storage_kind(stored)
        if self.recent and kind != _storage_kind(self.recent[0]):
            self.flush()
        self.recent.append(stored)
        self.recent_bytes += _chunk_nbytes(stored)
        if self.recent_bytes >= SEGMENT_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.recent:
            return
        if len(self.recent) == 1:
            self.chunks.append(self.recent[0])
        else:
            first = self.recent[0]
            parts = [c.digits if isinstance(c, _Scaled) else c for c in self.recent]
            merged = np.concatenate(parts)
            if isinstance(first, _Scaled):
                self.chunks.append(_Scaled(merged, first.decimals))
            else:
                self.chunks.append(merged)
        self.recent = []
        self.recent_bytes = 0

    def _plain_integers(self, tokens: pa.Array) -> Optional[pa.Array]:
        """float64 values of a batch of int64 tokens (one parse instead of a
        float parse plus an integer check), tried once the first batch showed
        integers; None when a token is anything else."""
        if not (self.all_int and self.batches):
            return None
        try:
            integers = pc.cast(tokens, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        low = pc.min(integers).as_py()
        if low is not None and low < 0:
            self.has_negative = True
        # Every int64 converts to the float64 pandas would parse (round to nearest).
        return pc.cast(integers, pa.float64(), safe=False)

    def _tokens_agree(self, tokens: pa.Array, values: pa.Array) -> bool:
        """Reject what Arrow parses but pandas does not: NaN spellings outside
        the NA list, padded or misspelled infinities, overflow to infinity."""
        # NaN and infinities propagate to the sum: a finite sum (the usual
        # case) clears the batch in one pass.
        total = pc.sum(values).as_py()
        if total is None or math.isfinite(total):
            return self._check_extremes(tokens, values)
        non_finite = pc.invert(pc.is_finite(values))
        if not pc.any(non_finite).as_py():
            return self._check_extremes(tokens, values)
        for token in tokens.filter(non_finite).to_pylist():
            if token.lower() not in _INF_TOKENS:
                return False
        return self._check_extremes(tokens, values)

    def _check_extremes(self, tokens: pa.Array, values: pa.Array) -> bool:
        extremes = pc.min_max(values)
        low, high = extremes["min"].as_py(), extremes["max"].as_py()
        if low is None:
            return True
        if low < 0:
            self.has_negative = True
        if high < _NEAR_INT64_EDGE and low > -_NEAR_INT64_EDGE:
            return True
        near_edge = pc.fill_null(pc.greater_equal(pc.abs(values), _NEAR_INT64_EDGE), False)
        for token in tokens.filter(near_edge).to_pylist():
            text = token.strip(_ASCII_SPACE)
            if not _INT_TOKEN.match(text):
                continue
            number = int(text)
            if number >= 2**64 or number < -(2**63):
                self.beyond_int = True
            elif number >= 2**63:
                self.uint64_only = True
        return True

    def _track_integers(self, tokens: pa.Array, values: pa.Array) -> None:
        # A value with a fraction cannot come from an integer token; a failed
        # cast costs milliseconds (Arrow builds the error), so skip it then.
        integral = pc.all(pc.equal(pc.floor(values), values)).as_py()
        if integral is False:
            self.all_int = False
            return
        try:
            pc.cast(tokens, pa.int64())
            return
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        # int64 refuses "+1" and overflow: look at the token shapes.
        all_int = pc.all(pc.match_substring_regex(tokens, _INT_TOKEN_RE2)).as_py()
        if all_int is False:
            self.all_int = False


_INT_STORAGE = (np.int8, np.int16, np.int32)
_INT_RANGES = [
    (dtype, (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))) for dtype in _INT_STORAGE
]


def _storage_kind(chunk: Union[np.ndarray, _Scaled]) -> Tuple[str, int]:
    if isinstance(chunk, _Scaled):
        return ("scaled", chunk.decimals)
    return (chunk.dtype.kind, 0)


def _chunk_nbytes(chunk: Union[np.ndarray, _Scaled]) -> int:
    return chunk.digits.nbytes if isinstance(chunk, _Scaled) else chunk.nbytes


_MAX_DECIMALS = 9


class _Scaled:
    """Values stored as small integers times 10**-decimals, exactly."""

    __slots__ = ("digits", "decimals")

    def __init__(self, digits: np.ndarray, decimals: int) -> None:
        self.digits = digits
        self.decimals = decimals

    def values(self) -> np.ndarray:
        return self.digits / (10.0**self.decimals)


def _compact(values: np.ndarray, decimals_hint: int = 0) -> Union[np.ndarray, _Scaled]:
    """Store a chunk in the smallest form that gives back the same float64s:
    integers in 1/2/4 bytes (an `age` column takes 1 byte per value), decimals
    with few digits as 4-byte integers plus a power of ten (`12.34` is 1234
    and 2). Every value is checked to round-trip bit for bit; otherwise the
    chunk stays float64. `decimals_hint` (what the previous chunk needed) is
    tried first."""
    low, high = float(values.min()), float(values.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        return values
    magnitude = max(abs(low), abs(high))
    candidates = [decimals_hint] + [d for d in range(_MAX_DECIMALS + 1) if d != decimals_hint]
    for decimals in candidates:
        scale = 10.0**decimals
        if magnitude * scale >= 2**31:
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            digits = np.rint(values * scale)
        exact = digits / scale if decimals else digits
        if not np.array_equal(exact, values):
            continue
        # rint is monotonic: the digits' range is that of low and high.
        low_digits, high_digits = round(low * scale), round(high * scale)
        for dtype, (lowest, highest) in _INT_RANGES:
            if lowest <= low_digits and high_digits <= highest:
                narrow = digits.astype(dtype)
                return narrow if decimals == 0 else _Scaled(narrow, decimals)
    return values


# What every token Arrow parses as float64 starts with (a superset: the cast
# decides). Checked on the first tokens of a column to skip a failing cast,
# which costs milliseconds per text column.
_NUMBER_START = r"^[ \t\n\r\x0b\x0c]*[+-]?([0-9.]|[iI][nN][fF]|[nN][aA][nN])"
_SNIFF_TOKENS = 16


def _may_be_numbers(tokens: pa.Array) -> bool:
    head = tokens.slice(0, _SNIFF_TOKENS)
    return pc.all(pc.match_substring_regex(head, _NUMBER_START)).as_py() is not False


def _parse_numbers(tokens: pa.Array) -> Optional[Tuple[pa.Array, pa.Array]]:
    """(float64 values, the tokens parsed) or None if a token is not a number.
    pandas allows ASCII whitespace around numbers; Arrow does not."""
    try:
        return pc.cast(tokens, pa.float64()), tokens
    except pa.ArrowInvalid:
        pass
    trimmed = pc.ascii_trim_whitespace(tokens)
    try:
        return pc.cast(trimmed, pa.float64()), trimmed
    except pa.ArrowInvalid:
        return None


class _Summarizer:
    def __init__(self, names: Sequence[str], header_row: int) -> None:
        self.names = list(names)
        self.header_row = header_row
        self.email_index = self.names.index(EMAIL_COLUMN)
        self.columns: Dict[int, _NumericColumn] = {
            index: _NumericColumn() for index, name in enumerate(self.names) if name != EMAIL_COLUMN
        }
        self.rows_seen = 0
        self.total_rows = 0
        self.distinct = DistinctDigests()
        self.email_tasks: List[Future[None]] = []
        self.bad_row: Optional[tuple] = None

    def run(self, source: _ArrowSource) -> CsvSummary:
        try:
            reader = pa_csv.open_csv(
                source,
                read_options=pa_csv.ReadOptions(
                    column_names=self.names, block_size=BLOCK_SIZE, use_threads=False
                ),
                parse_options=pa_csv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=self._on_invalid_row
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in self.names},
                    null_values=list(PANDAS_NA_VALUES),
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                    check_utf8=False,  # _CheckedStream validated every byte already
                ),
            )
            for batch in reader:
                self._consume(batch)
                source.batch_done()
        except pa.ArrowException as exc:
            if source.error is not None:
                raise source.error from None
            raise self._explain(exc) from None
        return self._result()

    def _on_invalid_row(self, row: object) -> str:
        self.bad_row = (
            getattr(row, "number", None),
            getattr(row, "expected_columns", None),
            getattr(row, "actual_columns", None),
        )
        return "error"

    def _explain(self, exc: Exception) -> InvalidCsv:
        if self.bad_row is not None:
            number, expected, actual = self.bad_row
            where = f"Row {self.header_row + number}" if number else "A row"
            return InvalidCsv(
                f"{where} has {actual} fields but the header has {expected} "
                "(rows are counted from the header, which is row 1)"
            )
        message = str(exc)
        if "straddling" in message:
            return InvalidCsv(
                f"A row is longer than {BLOCK_SIZE // 1024} KiB, the longest row accepted"
            )
        return InvalidCsv(f"Malformed CSV: {message[:200]}")

    def _consume(self, batch: pa.RecordBatch) -> None:
        self.rows_seen += batch.num_rows
        emails = clean_emails(batch.column(self.email_index))
        keep = pc.fill_null(pc.greater(pc.binary_length(emails), 0), False)
        kept_emails = emails.filter(keep)
        kept = len(kept_emails)
        self.total_rows += kept
        row_mask = None if kept == batch.num_rows else keep
        if kept:
            self.email_tasks.append(_work_pool().submit(self._count_emails, kept_emails))
        for index, column in self.columns.items():
            column.add(batch.column(index), row_mask)
        pending = []
        for task in self.email_tasks:
            if task.done():
                task.result()  # raises what the task raised
            else:
                pending.append(task)
        # Each waiting task holds a batch of emails: bound them.
        while len(pending) > MAX_EMAIL_TASKS:
            pending.pop(0).result()
        self.email_tasks = pending

    def _count_emails(self, emails: pa.Array) -> None:
        self.distinct.add(email_digests(emails))

    def _result(self) -> CsvSummary:
        for task in self.email_tasks:
            task.result()
        self.email_tasks = []
        # Counted before the columns are described: the merge buffer is freed
        # before the columns' copies are made (lower peak memory).
        unique_emails = self.distinct.count()
        numeric: Dict[str, List[Union[np.ndarray, _Scaled]]] = {}
        if self.rows_seen:
            for index, column in self.columns.items():
                if column.is_numeric:
                    column.flush()
                    numeric[self.names[index]] = column.chunks
                column.chunks = []
        # Every other column in the work thread, the rest here: two at a time,
        # each replaced by its copy as it is drained (about one column more).
        names = list(numeric)
        elsewhere = {
            name: _work_pool().submit(describe_values, numeric[name]) for name in names[1::2]
        }
        here = {name: describe_values(numeric[name]) for name in names[::2]}
        summary = {name: here[name] if name in here else elsewhere[name].result() for name in names}
        return CsvSummary(total_rows=self.total_rows, unique_emails=unique_emails, summary=summary)


MAX_EMAIL_TASKS = 4
_work_executor: Optional[ThreadPoolExecutor] = None
_work_lock = threading.Lock()
# One thread: each thread that allocates gets its own malloc arena, and more
# of them raised the peak RSS of an upload by ~8 MiB for no speed gained.
WORK_THREADS = 1


def _work_pool() -> ThreadPoolExecutor:
    """The thread hashing emails and describing columns for every upload of
    the process, beside the threads reading and converting the CSV (a second
    core's share, bounded for all uploads together)."""
    global _work_executor
    with _work_lock:
        if _work_executor is None:
            _work_executor = ThreadPoolExecutor(
                max_workers=WORK_THREADS, thread_name_prefix="csv-work", initializer=use_every_cpu
            )
        return _work_executor


def _chunk_len(chunk: Union[np.ndarray, _Scaled]) -> int:
    return len(chunk.digits) if isinstance(chunk, _Scaled) else len(chunk)


def describe_values(chunks: List[Union[np.ndarray, _Scaled]]) -> ColumnStats:
    """pandas `Series.describe()` of the non-missing values, computed the way
    pandas' nanops do (float64 sums, two-pass variance, ddof=1, linear
    percentiles). Consumes `chunks`.

    When every chunk is stored as integers with one scale (integers, or
    decimals with the same number of digits), the statistics are computed on
    the integers and scaled at the end: no float64 copy of the column is
    made, min/max are exact, and sums are exact up to 2**53.
    """
    count = sum(_chunk_len(chunk) for chunk in chunks)
    if count == 0:
        chunks.clear()
        nan = math.nan
        return ColumnStats(0, nan, nan, nan, nan, nan, nan, nan)
    decimals = _common_decimals(chunks)
    if decimals is None:
        values = np.empty(count)
        position = 0
        chunks.reverse()
        while chunks:
            chunk = chunks.pop()
            size = _chunk_len(chunk)
            values[position : position + size] = (
                chunk.values() if isinstance(chunk, _Scaled) else chunk
            )
            position += size
        scale = 1.0
    else:
        digits = [chunk.digits if isinstance(chunk, _Scaled) else chunk for chunk in chunks]
        chunks.clear()
        values = drain_into(np.empty(count, dtype=np.result_type(*digits)), digits)
        scale = 10.0**decimals
    chunks.clear()
    with np.errstate(invalid="ignore", over="ignore"):
        mean = float(values.sum(dtype=np.float64)) / count
        std = math.sqrt(_sum_of_squares(values, mean) / (count - 1)) if count > 1 else math.nan
        low, high = float(values.min()), float(values.max())
        p25, p50, p75 = _quartiles(values, low, high)
    if decimals:
        return ColumnStats(
            count,
            mean / scale,
            std / scale,
            low / scale,
            float(p25) / scale,
            float(p50) / scale,
            float(p75) / scale,
            high / scale,
        )
    return ColumnStats(count, mean, std, low, float(p25), float(p50), float(p75), high)


_QUARTILES = (0.25, 0.5, 0.75)
# Integer columns spanning at most this many values are counted, not sorted.
_COUNTED_RANGE = 1 << 16


def _quartiles(values: np.ndarray, low: float, high: float) -> Tuple[float, float, float]:
    """The 25%, 50% and 75% percentiles with numpy's default (linear)
    interpolation; may reorder `values`. Needs each quartile's two
    neighbouring order statistics: from a histogram for integers of a small
    range (one pass), else from one partition around the three lower ones
    (the upper neighbour is the minimum of the slice after it)."""
    count = len(values)
    positions = [(count - 1) * q for q in _QUARTILES]
    lower = [int(math.floor(position)) for position in positions]
    if values.dtype.kind in "iu" and high - low < _COUNTED_RANGE:
        # bincount copies its input to intp: count in slices (small temporaries).
        counts = np.zeros(int(high - low) + 1, dtype=np.int64)
        for start in range(0, count, _SLICE):
            piece = values[start : start + _SLICE].astype(np.intp) - int(low)
            counts += np.bincount(piece, minlength=len(counts))
        cumulative = np.cumsum(counts)

        def order_statistic(rank: int) -> float:
            return low + float(np.searchsorted(cumulative, rank, side="right"))

        neighbours = [(order_statistic(k), order_statistic(min(k + 1, count - 1))) for k in lower]
    else:
        ranks = sorted(set(lower))
        values.partition(ranks)
        # Past each partition point, the slice up to the next one holds the
        # next order statistic as its minimum.
        ends = {k: end for k, end in zip(ranks, ranks[1:] + [count - 1])}
        neighbours = [
            (
                float(values[k]),
                float(values[k + 1 : ends[k] + 1].min()) if k + 1 < count else float(values[k]),
            )
            for k in lower
        ]
    result = [
        _lerp(below, above, position - k)
        for (below, above), position, k in zip(neighbours, positions, lower)
    ]
    return result[0], result[1], result[2]


def _lerp(below: float, above: float, fraction: float) -> float:
    """numpy's interpolation formula (exact at both ends, monotonic)."""
    if fraction >= 0.5:
        return above - (above - below) * (1 - fraction)
    return below + (above - below) * fraction


def _common_decimals(chunks: List[Union[np.ndarray, _Scaled]]) -> Optional[int]:
    """The one scale of integer-stored chunks, or None (float64 needed)."""
    found: Optional[int] = None
    for chunk in chunks:
        if isinstance(chunk, _Scaled):
            decimals = chunk.decimals
        elif chunk.dtype.kind == "i":
            decimals = 0
        else:
            return None
        if found is not None and decimals != found:
            return None
        found = decimals
    return found


_SLICE = 1 << 16


def _sum_of_squares(values: np.ndarray, mean: float) -> float:
    """sum((values - mean)**2) in 64 Ki slices: no full-size temporary."""
    total = 0.0
    for start in range(0, len(values), _SLICE):
        deviations = values[start : start + _SLICE].astype(np.float64)
        deviations -= mean
        np.square(deviations, out=deviations)
        total += float(deviations.sum())
    return total
