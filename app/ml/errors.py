"""Errors of the model-serving domain."""

from __future__ import annotations

from app.core.errors import Conflict, NotFound, ServiceUnavailable, UnprocessableEntity


class ModelUnavailable(ServiceUnavailable):
    code = "model_unavailable"
    message = "No model is being served"


class Overloaded(ServiceUnavailable):
    code = "overloaded"
    message = "The prediction queue is full, retry shortly"


class WrongFeatureCount(UnprocessableEntity):
    code = "wrong_feature_count"
    message = "Wrong number of features"


class ModelNotFound(NotFound):
    message = "Model version not found"


class ModelInvalid(Conflict):
    """A stored artifact failed its checksum, load, warm-up or parity check."""

    code = "model_invalid"
    message = "The model artifact failed verification; the serving model is unchanged"


class ArtifactError(Exception):
    """Internal: an artifact cannot be trusted (checksum, format, parity)."""
