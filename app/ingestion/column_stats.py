"""Numeric column values, stored compactly (exact quantiles need them all),
and their `describe()` statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np

from app.ingestion.segments import drain_into


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


_INT_STORAGE = (np.int8, np.int16, np.int32)
_INT_RANGES = [
    (dtype, (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))) for dtype in _INT_STORAGE
]


def storage_kind(chunk: Union[np.ndarray, Scaled]) -> Tuple[str, int]:
    if isinstance(chunk, Scaled):
        return ("scaled", chunk.decimals)
    return (chunk.dtype.kind, 0)


def chunk_nbytes(chunk: Union[np.ndarray, Scaled]) -> int:
    return chunk.digits.nbytes if isinstance(chunk, Scaled) else chunk.nbytes


_MAX_DECIMALS = 9


class Scaled:
    """Values stored as small integers times 10**-decimals, exactly."""

    __slots__ = ("digits", "decimals")

    def __init__(self, digits: np.ndarray, decimals: int) -> None:
        self.digits = digits
        self.decimals = decimals

    def values(self) -> np.ndarray:
        return self.digits / (10.0**self.decimals)


def compact(values: np.ndarray, decimals_hint: int = 0) -> Union[np.ndarray, Scaled]:
    """The smallest form that gives back the same float64s bit for bit:
    integers in 1/2/4 bytes, decimals with few digits as integers plus a power
    of ten (`12.34` is 1234 and 2), else float64. `decimals_hint` (what the
    previous chunk needed) is tried first."""
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
                return narrow if decimals == 0 else Scaled(narrow, decimals)
    return values


def _chunk_len(chunk: Union[np.ndarray, Scaled]) -> int:
    return len(chunk.digits) if isinstance(chunk, Scaled) else len(chunk)


def describe_values(chunks: List[Union[np.ndarray, Scaled]]) -> ColumnStats:
    """pandas `Series.describe()` of the non-missing values, computed the way
    pandas' nanops do (float64 sums, two-pass variance, ddof=1, linear
    percentiles). Consumes `chunks`. When every chunk holds integers of one
    scale, works on the integers and scales at the end (no float64 copy)."""
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
                chunk.values() if isinstance(chunk, Scaled) else chunk
            )
            position += size
        scale = 1.0
    else:
        digits = [chunk.digits if isinstance(chunk, Scaled) else chunk for chunk in chunks]
        chunks.clear()
        values = drain_into(np.empty(count, dtype=np.result_type(*digits)), digits)
        scale = 10.0**decimals
    chunks.clear()
    with np.errstate(invalid="ignore", over="ignore"):
        mean = float(values.sum(dtype=np.float64)) / count
        std = math.sqrt(_sum_of_squares(values, mean) / (count - 1)) if count > 1 else math.nan
        low, high = float(values.min()), float(values.max())
        p25, p50, p75 = _quartiles(values, low, high)
    # Dividing by 1.0 changes nothing: one return serves every scale.
    return ColumnStats(count, *(float(v) / scale for v in (mean, std, low, p25, p50, p75, high)))


_QUARTILES = (0.25, 0.5, 0.75)
# Integer columns spanning at most this many values are counted, not sorted.
_COUNTED_RANGE = 1 << 16


def _quartiles(values: np.ndarray, low: float, high: float) -> Tuple[float, float, float]:
    """The quartiles with numpy's default (linear) interpolation; may reorder
    `values`. Each quartile's two neighbouring order statistics come from a
    histogram for integers of a small range, else from one partition."""
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


def _common_decimals(chunks: List[Union[np.ndarray, Scaled]]) -> Optional[int]:
    """The one scale of integer-stored chunks, or None (float64 needed)."""
    found: Optional[int] = None
    for chunk in chunks:
        if isinstance(chunk, Scaled):
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
