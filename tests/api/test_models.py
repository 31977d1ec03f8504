"""GET /v1/models, GET /v1/models/{model} and POST /v1/models/{model}/predict."""

from __future__ import annotations

import httpx

from tests.conftest import ECHO_ALIAS, ECHO_SNAPSHOT


async def test_lists_served_models_with_window_and_capabilities(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    (model,) = body["data"]
    assert model["id"] == ECHO_ALIAS
    assert model["object"] == "model"
    assert model["snapshot"] == ECHO_SNAPSHOT
    assert model["owned_by"] == "portico"
    assert isinstance(model["created"], int)
    assert model["context_window"] == 256
    assert "chat" in model["capabilities"] and "completions" in model["capabilities"]


async def test_gets_one_model_by_alias_or_snapshot(client: httpx.AsyncClient) -> None:
    by_alias = await client.get(f"/v1/models/{ECHO_ALIAS}")
    by_snapshot = await client.get(f"/v1/models/{ECHO_SNAPSHOT}")

    assert by_alias.status_code == by_snapshot.status_code == 200
    assert by_alias.json() == by_snapshot.json()


async def test_unknown_model_is_404_model_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/gpt-9")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert response.json()["error"]["param"] == "model"


async def test_predict_turns_an_input_into_an_output(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/v1/models/{ECHO_ALIAS}/predict", json={"input": "plain words in"})

    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("pred-")
    assert body["output"] == "plain words in"
    assert body["model"] == ECHO_SNAPSHOT
    assert body["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 3


async def test_predict_honours_max_tokens(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/v1/models/{ECHO_ALIAS}/predict", json={"input": "a b c", "max_tokens": 1})

    assert response.json()["output"] == "a "
    assert response.json()["finish_reason"] == "length"


async def test_predict_on_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/nope/predict", json={"input": "x"})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
