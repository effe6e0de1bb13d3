"""Model-serving rules: input checks, predictions, the registry view, activation."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import anyio
import numpy as np

from app.ml.batcher import Prediction
from app.ml.errors import WrongFeatureCount
from app.ml.serving import ModelServer


def _check_width(expected: int, got: int, row: int = -1) -> None:
    if got != expected:
        where = f" in row {row}" if row >= 0 else ""
        raise WrongFeatureCount(detail=f"Expected {expected} features, got {got}{where}")


async def predict_one(server: ModelServer, features: Sequence[float]) -> Tuple[int, float, str]:
    """Label and class-1 probability of one row, both from one predict_proba.
    Raises WrongFeatureCount (422), ModelUnavailable or Overloaded (503)."""
    model = server.require_model()
    _check_width(model.n_features, len(features))
    result: Prediction = await server.predict(np.asarray([features], dtype=np.float32))
    return result.labels[0], result.probabilities[0], result.model_version


async def predict_many(server: ModelServer, instances: Sequence[Sequence[float]]) -> Prediction:
    """Labels and probabilities for 1–1000 rows in one call (same errors)."""
    model = server.require_model()
    for index, row in enumerate(instances):
        _check_width(model.n_features, len(row), index)
    return await server.predict(np.asarray(instances, dtype=np.float32))


async def list_models(server: ModelServer) -> List[Dict[str, Any]]:
    """Every readable registered version, newest first, flagged when active."""
    registry = server.registry
    if registry is None:
        return []
    manifests = await anyio.to_thread.run_sync(registry.manifests)
    current = server.current()
    active = current.version if current is not None else None
    return [{**m, "is_active": m.get("version") == active} for m in manifests]


def active_model(server: ModelServer) -> Dict[str, Any]:
    """The manifest of the model this process serves. Raises ModelUnavailable."""
    return server.require_model().manifest


async def activate_model(server: ModelServer, version: str) -> Dict[str, Any]:
    """Make `version` the serving model everywhere; see ModelServer.activate."""
    return await server.activate(version)
