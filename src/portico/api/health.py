"""GET /healthz (the process is alive) and GET /readyz (models loaded, database and limits reachable, circuits;
``shutting_down`` once a shutdown began, so a load balancer stops sending traffic here)."""

from __future__ import annotations

from collections.abc import Awaitable

from fastapi import APIRouter
from starlette.responses import Response

from portico.api.deps import RuntimeDep, SettingsDep
from portico.api.rendering import json_response
from portico.errors import PorticoError
from portico.schemas.health import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    return json_response(Health(status="ok"))


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(runtime: RuntimeDep, settings: SettingsDep) -> Response:
    """Ready when every model is loaded and the database answers; a limits backend that is down makes the
    server unready only under the fail-closed policy (fail-open keeps serving without limits). Each upstream
    deployment's circuit state is shown (``closed``, ``open``, ``half_open``) but never makes the server
    unready: other deployments and fallbacks may still answer."""
    checks = {f"model:{served.alias}": "ok" if served.ready else "loading" for served in runtime.registry}
    checks["database"] = await _check(runtime.control.database.ping())
    checks["limits"] = await _check(runtime.control.meter.limiter.ping())
    blocking = dict(checks)
    if settings.limits.on_redis_error == "open":
        del blocking["limits"]
    checks.update({f"upstream:{name}": state for name, state in runtime.registry.circuits().items()})
    if runtime.shutting_down.is_set():
        return json_response(Readiness(status="shutting_down", checks=checks), status_code=503)
    ready = all(value == "ok" for value in blocking.values())
    return json_response(
        Readiness(status="ready" if ready else "not_ready", checks=checks), status_code=200 if ready else 503
    )


async def _check(probe: Awaitable[None]) -> str:
    try:
        await probe
    except PorticoError:
        return "unavailable"
    return "ok"
