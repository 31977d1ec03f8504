"""/healthz, /readyz, /openapi.json and /docs."""

from __future__ import annotations

import httpx

from portico.app import create_app
from tests.conftest import echo_settings


async def test_healthz_says_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_each_model_loaded(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"model:echo": "ok", "database": "ok", "limits": "ok"}}


async def test_readyz_is_503_until_models_are_loaded() -> None:
    app = create_app(echo_settings())
    async with app.router.lifespan_context(app):
        for served in app.state.runtime.registry:
            served.ready = False
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portico.test") as http:
            response = await http.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"] == {"model:echo": "loading", "database": "ok", "limits": "ok"}


async def test_openapi_and_docs_are_served(client: httpx.AsyncClient) -> None:
    spec = await client.get("/openapi.json")
    docs = await client.get("/docs")

    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/tokenize", "/readyz"):
        assert path in paths
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
