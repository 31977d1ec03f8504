"""GET /v1/models, GET /v1/models/{model}, POST /v1/models/{model}/predict."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from portico.api.deps import PipelineDep, PrincipalDep, RegistryDep, require_json, require_scope
from portico.api.disconnect import cancel_on_disconnect
from portico.api.rendering import GENERATION_ERRORS, error_responses, generated_response, json_response
from portico.api.versioning import unix_seconds
from portico.constants import OWNED_BY, Scope
from portico.engines.registry import ServedModel
from portico.engines.versions import ModelVersion
from portico.schemas.models import Model, ModelList, ModelSnapshot, Prediction, PredictRequest

router = APIRouter(tags=["models"])


def _describe(served: ServedModel) -> Model:
    return Model(
        id=served.alias,
        created=served.settings.created,
        owned_by=OWNED_BY,
        snapshot=served.snapshot,
        context_window=served.engine.context_window,
        capabilities=sorted(c.value for c in served.engine.capabilities),
        snapshots=[_snapshot(version) for version in served.snapshots()],
    )


def _snapshot(version: ModelVersion) -> ModelSnapshot:
    return ModelSnapshot(
        id=version.snapshot,
        status=version.status,
        deprecated_at=None if version.deprecated is None else unix_seconds(version.deprecated),
        sunset_at=None if version.sunset is None else unix_seconds(version.sunset),
        replacement=version.replacement,
    )


@router.get("/v1/models", response_model=ModelList, dependencies=[require_scope(Scope.MODELS_READ)])
async def list_models(registry: RegistryDep) -> Response:
    return json_response(ModelList(data=[_describe(served) for served in registry]))


@router.get(
    "/v1/models/{model}",
    response_model=Model,
    responses=error_responses(401, 403, 404, 410),
    dependencies=[require_scope(Scope.MODELS_READ)],
)
async def get_model(model: str, registry: RegistryDep) -> Response:
    return json_response(_describe(registry.resolve(model)))


@router.post(
    "/v1/models/{model}/predict",
    response_model=Prediction,
    responses=GENERATION_ERRORS,
    dependencies=[require_scope(Scope.INFERENCE), Depends(require_json)],
)
async def predict(
    model: str, body: PredictRequest, request: Request, pipeline: PipelineDep, principal: PrincipalDep
) -> Response:
    """One input string in, one output string out: for clients that do not speak chat."""
    return generated_response(await cancel_on_disconnect(request, pipeline.predict(model, body, principal)))
