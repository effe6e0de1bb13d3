"""The fast handlers of POST /api/predict and /api/predict/batch.

Why: onnxruntime needs ~12 µs per row, while FastAPI's route machinery cost
~10× that per request; it was what capped throughput and tail latency
(docs/ml.md has the profile). The mechanism (accept-only, declined requests
replayed to the regular route, errors from the same handlers) is
app/core/fastpath.py.

What is accepted: a JSON content type, a bearer token that authenticates,
and a body that is exactly `{"features": [numbers]}` (or
`{"instances": [[numbers], ...]}`) with the served model's width, every
number finite and within float32 range. Errors raised after acceptance (503
model_unavailable / overloaded) are the regular path's exceptions.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import orjson
from starlette.types import Scope, Send

from app.auth.principal import bearer_principal
from app.core.fastpath import header, is_json, send_json
from app.ml.schemas import FLOAT32_MAX, MAX_BATCH_ROWS
from app.ml.serving import model_server

_NUMBER_TYPES = frozenset((float, int))  # exact types: bool is refused, as Strict() does


async def _authenticated(scope: Scope) -> bool:
    return await bearer_principal(header(scope, b"authorization")) is not None


def _is_row(row: Any, width: int) -> bool:
    # orjson never yields NaN or ±inf (it rejects those literals and overflow),
    # so min/max bound every value.
    return (
        type(row) is list
        and len(row) == width
        and {*map(type, row)} <= _NUMBER_TYPES
        and -FLOAT32_MAX <= min(row)
        and max(row) <= FLOAT32_MAX
    )


def _document(body: bytes, key: str) -> Any:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict or len(document) != 1:
        return None
    return document.get(key)


def parse_features(body: bytes, width: int) -> Optional[np.ndarray]:
    """A (1, width) float32 array for a plainly valid `{"features": [...]}`,
    else None (the regular path then explains what is wrong)."""
    row = _document(body, "features")
    if width < 1 or not _is_row(row, width):
        return None
    # Through float64 like the regular path (Pydantic floats), then float32.
    return np.array([row], dtype=np.float64).astype(np.float32)


def parse_instances(body: bytes, width: int) -> Optional[np.ndarray]:
    """An (n, width) float32 array for a plainly valid `{"instances": [[...], ...]}`
    with 1–MAX_BATCH_ROWS rows, else None."""
    rows = _document(body, "instances")
    if (
        width < 1
        or type(rows) is not list
        or not 1 <= len(rows) <= MAX_BATCH_ROWS
        or not all(_is_row(row, width) for row in rows)
    ):
        return None
    return np.array(rows, dtype=np.float64).astype(np.float32)


async def predict_one(scope: Scope, body: bytes, send: Send) -> bool:
    if not is_json(scope):
        return False
    model = model_server.current()
    if model is None:  # the regular path answers 503 model_unavailable
        return False
    rows = parse_features(body, model.n_features)
    if rows is None or not await _authenticated(scope):
        return False
    result = await model_server.predict(rows)
    payload = orjson.dumps(
        {
            "prediction": result.labels[0],
            "probability": result.probabilities[0],
            "model_version": result.model_version,
        }
    )
    await send_json(send, payload)
    return True


async def predict_batch(scope: Scope, body: bytes, send: Send) -> bool:
    if not is_json(scope):
        return False
    model = model_server.current()
    if model is None:
        return False
    rows = parse_instances(body, model.n_features)
    if rows is None or not await _authenticated(scope):
        return False
    result = await model_server.predict(rows)
    predictions = [
        {"prediction": label, "probability": probability}
        for label, probability in zip(result.labels, result.probabilities)
    ]
    payload = orjson.dumps({"predictions": predictions, "model_version": result.model_version})
    await send_json(send, payload)
    return True
