"""The email column of an upload: cleaned with Python's strip()/lower()
rules, and its distinct values counted by keyed 64-bit digests (8 bytes per
email instead of the string)."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import List

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.ingestion.segments import SEGMENT_BYTES, drain_into

# The ASCII characters str.strip() removes (Arrow's ascii_trim_whitespace
# keeps \x1c-\x1f; its utf8_trim_whitespace removes them, as Python does).
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def clean_emails(emails: pa.Array) -> pa.Array:
    """Emails stripped and lowercased with Python's rules; ASCII batches take
    Arrow's (much cheaper) ASCII kernels."""
    if _is_ascii(emails):
        return pc.ascii_lower(pc.ascii_trim(emails, _ASCII_WHITESPACE))
    return pc.utf8_lower(pc.utf8_trim_whitespace(emails))


def _is_ascii(strings: pa.Array) -> bool:
    """No byte >= 0x80 in the array's character data (the whole buffer: a
    slice may be judged on bytes outside it, never wrongly as ASCII)."""
    data = strings.buffers()[2]
    if data is None or data.size == 0:
        return True
    return int(np.frombuffer(data, dtype=np.uint8).max()) < 0x80


# Digests are only compared within one process: a random key per process
# keeps crafted collisions out of reach.
_DIGEST_KEY = os.urandom(16)
_DIGEST_SEED = np.uint64(int.from_bytes(_DIGEST_KEY[:8], "little"))
_WORD = np.dtype("<u8")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)
_ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)
# Strings up to this many bytes are hashed with numpy, 8 bytes a step over
# the whole batch; longer ones (rare for emails) one by one with BLAKE2b.
_SHORT_STRING = 64


def email_digests(emails: pa.Array) -> np.ndarray:
    """A 64-bit digest of each string (no nulls): 8 bytes per email instead
    of the string. Equal strings get equal digests; two different ones the
    same with probability about 2**-64 (the count of distinct emails is
    off only if two of them collide: about n**2 / 2**65 for n distinct)."""
    count = len(emails)
    if count == 0:
        return np.empty(0, dtype=np.uint64)
    _, offset_buffer, data_buffer = emails.buffers()
    offsets = np.frombuffer(
        offset_buffer, dtype=np.int32, count=count + 1, offset=emails.offset * 4
    )
    first, last = int(offsets[0]), int(offsets[-1])
    starts = offsets[:-1].astype(np.int64) - first
    lengths = np.diff(offsets).astype(np.int64)
    data = np.frombuffer(data_buffer or b"", dtype=np.uint8)[first:last]
    digests = _short_digests(data, starts, lengths)
    long_rows = np.flatnonzero(lengths > _SHORT_STRING)
    for row in long_rows.tolist():
        text = data[starts[row] : starts[row] + lengths[row]].tobytes()
        digest = hashlib.blake2b(text, digest_size=8, key=_DIGEST_KEY).digest()
        digests[row] = int.from_bytes(digest, "little")
    return digests


def _short_digests(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Digests of the strings data[start:start + length], hashing their first
    _SHORT_STRING bytes: h = mix(h ^ next 8 bytes), seeded with the key and
    the length (mix: MurmurHash3's 64-bit finalizer, a bijection)."""
    # Room for reading past the end: a short string at the end is still
    # looked at (and masked) while longer ones need more steps.
    words = (len(data) + _SHORT_STRING) // 8 + 2
    padded = np.zeros(words * 8 + 8, dtype=np.uint8)
    padded[: len(data)] = data
    # The strings starting at offset k (mod 8) read aligned words of a view
    # shifted by k bytes (views: no copy of the data).
    groups = []
    for k in range(8):
        rows = np.flatnonzero((starts & 7) == k)
        if len(rows):
            view = padded[k : k + (words - 1) * 8].view(_WORD)
            groups.append((rows, view, starts[rows] >> 3))
    digests = lengths.astype(np.uint64) * _GOLDEN
    digests ^= _DIGEST_SEED
    width = min(int(lengths.max()), _SHORT_STRING)
    word = np.empty(len(lengths), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for step in range(0, width, 8):
            for rows, view, first_words in groups:
                word[rows] = view[first_words + step // 8]
            # Keep the string's own bytes (the low ones: little-endian).
            remaining = np.clip(lengths - step, 0, 8).astype(np.uint64) * np.uint64(8)
            word &= ~(_ALL_BITS << remaining)
            digests ^= word
            digests ^= digests >> _SHIFT
            digests *= _MIX1
            digests ^= digests >> _SHIFT
            digests *= _MIX2
            digests ^= digests >> _SHIFT
    return digests


class DistinctDigests:
    """The distinct digests of one upload, as sorted runs made of a segment's
    worth of batches each (see segments.py), sorted in the work thread while
    the upload streams. At the end the runs are merged (a stable sort finds
    them: a merge, not a sort)."""

    def __init__(self) -> None:
        self._runs: List[np.ndarray] = []
        self._recent: List[np.ndarray] = []
        self._recent_bytes = 0
        self._lock = threading.Lock()

    def add(self, digests: np.ndarray) -> None:
        with self._lock:
            self._recent.append(digests)
            self._recent_bytes += digests.nbytes
            if self._recent_bytes < SEGMENT_BYTES:
                return
            batches, self._recent, self._recent_bytes = self._recent, [], 0
        run = np.unique(np.concatenate(batches))
        with self._lock:
            self._runs.append(run)

    def count(self) -> int:
        """The number of distinct digests; empties the collection."""
        with self._lock:
            parts = self._runs
            if self._recent:
                parts.append(np.unique(np.concatenate(self._recent)))
            self._runs, self._recent, self._recent_bytes = [], [], 0
        if not parts:
            return 0
        digests = drain_into(np.empty(sum(len(part) for part in parts), dtype=np.uint64), parts)
        digests.sort(kind="stable")
        return 1 + int(np.count_nonzero(digests[1:] != digests[:-1]))
