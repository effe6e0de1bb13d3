"""Streaming CSV summary with the semantics of pandas `read_csv` + `describe()`.

Runs in a worker thread, pulling byte pieces from the upload channel; the file
is never held. pyarrow's streaming reader tokenizes it (every column as text,
see csv_reader.py); whether a column is numeric is decided per token the way
pandas' C parser decides it, over all rows of the file:
- missing: the exact tokens of pandas' default NA list; an all-missing column
  is numeric (count 0) as long as the file has data rows;
- ASCII whitespace around numbers is allowed, `inf`/`-infinity` spelled
  exactly (any case) are infinities, any other token (text, `True`, `1e500`,
  `NAN`) makes the column non-numeric;
- an all-integer column with values outside int64 (and not all within uint64)
  is text.
The statistics use the kept rows only (rows with an empty email are dropped).
Memory per upload: a few blocks in flight, at most 8 bytes per kept numeric
value (column_stats.py) and per distinct email (emails.py).
"""

from __future__ import annotations

import math
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from app.ingestion.column_stats import (
    ColumnStats,
    Scaled,
    chunk_nbytes,
    compact,
    describe_values,
    storage_kind,
)
from app.ingestion.csv_reader import (
    BLOCK_SIZE,
    ArrowSource,
    CheckedStream,
    PieceReader,
    column_names,
    read_start,
    split_header,
)
from app.ingestion.emails import DistinctDigests, clean_emails, email_digests
from app.ingestion.errors import InvalidCsv, MissingColumns
from app.ingestion.segments import SEGMENT_BYTES

REQUIRED_COLUMNS = ("id", "name", "email")
EMAIL_COLUMN = "email"

# pandas' default `na_values` (pandas._libs.parsers.STR_NA_VALUES); a unit
# test keeps this list equal to the installed pandas'.
PANDAS_NA_VALUES = tuple(
    "|#N/A|#N/A N/A|#NA|-1.#IND|-1.#QNAN|-NaN|-nan|1.#IND|1.#QNAN|<NA>|N/A|NA|NULL|NaN|None"
    "|n/a|nan|null".split("|")
)
_INF_TOKENS = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
_ASCII_SPACE = " \t\n\r\x0b\x0c"
_INT_TOKEN = re.compile(r"^[ \t\n\r\x0b\x0c]*[+-]?[0-9]+[ \t\n\r\x0b\x0c]*$")
# Float64 cannot tell 2**63 - 1 from 2**63: look at the tokens near the edge.
_NEAR_INT64_EDGE = float(2**63 - 4096)


@dataclass
class CsvSummary:
    total_rows: int
    unique_emails: int
    summary: Dict[str, ColumnStats] = field(default_factory=dict)


def summarize_csv(read_piece: PieceReader) -> CsvSummary:
    """Summarize a CSV file delivered as byte pieces (`None` marks the end).
    Raises InvalidCsv (with the line or row where it can tell) for empty,
    compressed, binary, non-UTF-8, headerless or malformed files, or
    MissingColumns; what `read_piece` raises propagates unchanged."""
    stream = CheckedStream(read_piece)
    head = read_start(stream)
    header_bytes, rest, header_row = split_header(stream, head)
    names = column_names(header_bytes)
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise MissingColumns(f"Missing required columns: {', '.join(missing)}")
    source = ArrowSource(stream, rest)
    if source.at_eof():
        return CsvSummary(total_rows=0, unique_emails=0)
    return _Summarizer(names, header_row).run(source)


class _NumericColumn:
    """Decides whether one column is numeric (over every row) and keeps the
    values of the kept rows for the exact statistics."""

    def __init__(self) -> None:
        self.is_text = False
        self.all_int = True
        self.has_negative = False
        self.uint64_only = False
        self.beyond_int = False
        self.chunks: List[Union[np.ndarray, Scaled]] = []
        self.recent: List[Union[np.ndarray, Scaled]] = []
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
            stored = compact(values.to_numpy(zero_copy_only=False), self.decimals_hint)
            if isinstance(stored, Scaled):
                self.decimals_hint = stored.decimals
            self._keep(stored)

    def _keep(self, stored: Union[np.ndarray, Scaled]) -> None:
        """Merges consecutive small arrays of one storage kind into segments
        (see segments.py): kept one by one they would fragment the heap."""
        kind = storage_kind(stored)
        if self.recent and kind != storage_kind(self.recent[0]):
            self.flush()
        self.recent.append(stored)
        self.recent_bytes += chunk_nbytes(stored)
        if self.recent_bytes >= SEGMENT_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.recent:
            return
        if len(self.recent) == 1:
            self.chunks.append(self.recent[0])
        else:
            first = self.recent[0]
            parts = [c.digits if isinstance(c, Scaled) else c for c in self.recent]
            merged = np.concatenate(parts)
            if isinstance(first, Scaled):
                self.chunks.append(Scaled(merged, first.decimals))
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
        if total is not None and not math.isfinite(total):
            non_finite = pc.invert(pc.is_finite(values))
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
        all_int = pc.all(pc.match_substring_regex(tokens, _INT_TOKEN.pattern)).as_py()
        if all_int is False:
            self.all_int = False


# What every token Arrow parses as float64 starts with (a superset: the cast
# decides); sniffed to skip a failing cast, which is slow.
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

    def run(self, source: ArrowSource) -> CsvSummary:
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
                    check_utf8=False,  # CheckedStream validated every byte already
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
        numeric: Dict[str, List[Union[np.ndarray, Scaled]]] = {}
        if self.rows_seen:
            for index, column in self.columns.items():
                if column.is_numeric:
                    column.flush()
                    numeric[self.names[index]] = column.chunks
                column.chunks = []
        # Two columns at a time: every other one in the work thread.
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
# One thread: each allocating thread gets its own malloc arena (more peak memory).
WORK_THREADS = 1


def _work_pool() -> ThreadPoolExecutor:
    """The thread hashing emails and describing columns, shared by every
    upload of the process (bounded for all uploads together)."""
    global _work_executor
    with _work_lock:
        if _work_executor is None:
            _work_executor = ThreadPoolExecutor(
                max_workers=WORK_THREADS, thread_name_prefix="csv-work"
            )
        return _work_executor
