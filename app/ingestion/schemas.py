from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, Optional

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # csv_summary imports pyarrow: only the upload path loads it
    from app.ingestion.column_stats import ColumnStats
    from app.ingestion.csv_summary import CsvSummary


def _finite(value: float) -> Optional[float]:
    """NaN and infinities have no JSON form: they are sent as null."""
    return value if math.isfinite(value) else None


class ColumnSummary(BaseModel):
    """pandas `describe()` of one numeric column; null where pandas gives NaN or ±inf."""

    model_config = ConfigDict(populate_by_name=True)

    count: int
    mean: Optional[float]
    std: Optional[float]
    min: Optional[float]
    p25: Optional[float] = Field(alias="25%")
    p50: Optional[float] = Field(alias="50%")
    p75: Optional[float] = Field(alias="75%")
    max: Optional[float]

    @classmethod
    def from_stats(cls, stats: ColumnStats) -> ColumnSummary:
        return cls(
            count=stats.count,
            mean=_finite(stats.mean),
            std=_finite(stats.std),
            min=_finite(stats.min),
            p25=_finite(stats.p25),
            p50=_finite(stats.p50),
            p75=_finite(stats.p75),
            max=_finite(stats.max),
        )


class CsvUploadOut(BaseModel):
    total_rows: int
    unique_emails: int
    summary: Dict[str, ColumnSummary]

    @classmethod
    def from_summary(cls, result: CsvSummary) -> CsvUploadOut:
        return cls(
            total_rows=result.total_rows,
            unique_emails=result.unique_emails,
            summary={name: ColumnSummary.from_stats(s) for name, s in result.summary.items()},
        )
