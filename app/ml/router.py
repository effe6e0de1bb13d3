from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response
from typing_extensions import Annotated

from app.admin import audit
from app.auth.dependencies import CurrentSuperuser, CurrentUser
from app.core.db import DbSession
from app.core.pagination import NoQuery, Page, Pagination
from app.core.responses import ORJSONUTCResponse
from app.core.routing import KeelRoute, json_body_openapi, read_json_body
from app.core.schemas import error_responses
from app.ml import service
from app.ml.schemas import (
    ActiveModelOut,
    BatchPredictionOut,
    BatchPredictRequest,
    ModelOut,
    PredictionOut,
    PredictRequest,
    RowPrediction,
)
from app.ml.serving import model_server

router = APIRouter(prefix="/api", tags=["models"], route_class=KeelRoute)

VersionPath = Annotated[str, Path(examples=["v1"])]


@router.post(
    "/predict",
    dependencies=[NoQuery],
    response_model=PredictionOut,
    responses=error_responses(401, 422, 503),
    openapi_extra=json_body_openapi(PredictRequest),
)
async def predict(request: Request, user: CurrentUser) -> Response:
    # The body in one pydantic-core pass from its bytes (app/core/routing.py);
    # the answer built from plain values, so not validated again.
    body = await read_json_body(request, PredictRequest)
    label, probability, version = await service.predict_one(model_server, body.features)
    return ORJSONUTCResponse(
        {"prediction": label, "probability": probability, "model_version": version}
    )


@router.post(
    "/predict/batch",
    dependencies=[NoQuery],
    response_model=BatchPredictionOut,
    responses=error_responses(401, 422, 503),
    openapi_extra=json_body_openapi(BatchPredictRequest),
)
async def predict_batch(request: Request, user: CurrentUser) -> BatchPredictionOut:
    body = await read_json_body(request, BatchPredictRequest)
    result = await service.predict_many(model_server, body.instances)
    return BatchPredictionOut(
        predictions=[
            RowPrediction(prediction=label, probability=probability)
            for label, probability in zip(result.labels, result.probabilities)
        ],
        model_version=result.model_version,
    )


@router.get("/models", response_model=Page[ModelOut], responses=error_responses(401, 422))
async def list_models(user: CurrentUser, page: Pagination) -> Page[ModelOut]:
    models = await service.list_models(model_server)
    window = models[page.offset : page.offset + page.limit]
    return Page[ModelOut](
        items=[ModelOut.model_validate(m) for m in window],
        total=len(models),
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/models/active",
    dependencies=[NoQuery],
    response_model=ActiveModelOut,
    responses=error_responses(401, 503),
)
async def read_active_model(user: CurrentUser) -> ActiveModelOut:
    return ActiveModelOut.model_validate(service.active_model(model_server))


@router.post(
    "/models/{version}/activate",
    dependencies=[NoQuery],
    response_model=ActiveModelOut,
    responses=error_responses(401, 403, 404, 409, 503),
    summary="Serve another version (superuser); no request fails during the swap",
)
async def activate_model(
    version: VersionPath, request: Request, session: DbSession, user: CurrentSuperuser
) -> ActiveModelOut:
    # Recorded first: a failed activation raises, and the rollback drops the record.
    address = audit.request_address(request)
    await audit.record(
        session, user, "model.activate", "model", version, address=address, channel=audit.API
    )
    manifest = await service.activate_model(model_server, version)
    return ActiveModelOut.model_validate(manifest)
