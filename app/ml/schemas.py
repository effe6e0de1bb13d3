from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, List

from pydantic import BaseModel, ConfigDict, Field, Strict
from typing_extensions import Annotated

MAX_BATCH_ROWS = 1000
MAX_FEATURES = 1024  # no served model is wider; a wrong count is a 422 anyway
# Inputs are float32 for the model: larger magnitudes would become infinities.
FLOAT32_MAX = 3.4028234663852886e38

Feature = Annotated[float, Strict(), Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]


class PredictRequest(BaseModel):
    """One row. Numbers only: strings, booleans, null, NaN and ±inf are refused."""

    model_config = ConfigDict(extra="forbid")
    features: List[Feature] = Field(max_length=MAX_FEATURES)


class BatchPredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: List[Annotated[List[Feature], Field(max_length=MAX_FEATURES)]] = Field(
        min_length=1, max_length=MAX_BATCH_ROWS
    )


class PredictionOut(BaseModel):
    prediction: int
    probability: float = Field(description="probability of class 1")
    model_version: str


class RowPrediction(BaseModel):
    prediction: int
    probability: float


class BatchPredictionOut(BaseModel):
    predictions: List[RowPrediction]
    model_version: str


class ModelOut(BaseModel):
    """A registered version's manifest."""

    name: str
    version: str
    kind: str
    n_features: int
    feature_names: List[str]
    classes: List[int]
    metrics: Dict[str, float]
    created_at: datetime
    sha256: str
    framework: Dict[str, str]
    params: Dict[str, Any] = {}
    is_active: bool = False


class ActiveModelOut(BaseModel):
    name: str
    version: str
    n_features: int
    feature_names: List[str]
    classes: List[int]
    metrics: Dict[str, float]
    created_at: datetime
    sha256: str
