"""GET /healthz (the process is alive) and GET /readyz (every model is loaded and can take work)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from portico.api.deps import RegistryDep
from portico.api.responses import json_response
from portico.schemas.health import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    return json_response(Health(status="ok"))


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(registry: RegistryDep) -> Response:
    checks = {f"model:{served.alias}": "ok" if served.ready else "loading" for served in registry}
    ready = all(value == "ok" for value in checks.values())
    return json_response(
        Readiness(status="ready" if ready else "not_ready", checks=checks), status_code=200 if ready else 503
    )
