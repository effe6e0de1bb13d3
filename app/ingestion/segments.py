"""Numeric data kept in 1 MiB segments (malloc maps blocks that size on their
own, so freeing them returns memory to the system instead of fragmenting the
heap), and concatenation that never holds the data twice."""

from __future__ import annotations

from typing import List

import numpy as np

SEGMENT_BYTES = 1 << 20


def drain_into(out: np.ndarray, parts: List[np.ndarray]) -> np.ndarray:
    """Concatenate into `out`, dropping each part once copied (peak: the
    result plus one part, not twice the data)."""
    parts.reverse()
    position = 0
    while parts:
        part = parts.pop()
        out[position : position + len(part)] = part
        position += len(part)
        del part
    return out
