"""Model versioning: aliases follow the current snapshot, snapshot ids pin one; deprecated snapshots answer
with Deprecation/Sunset/Link headers on every path; retired ones are 410 model_retired naming the replacement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from email.utils import parsedate_to_datetime

import httpx
import pytest

from portico.settings import EchoModel, ModelSettings, SentenceTransformersModel, Settings, SnapshotSettings
from tests.conftest import ECHO_ALIAS, ECHO_SNAPSHOT, asgi_client, echo_settings, sse_events

PINNED = "echo-2025-06-01"  # an older snapshot, deprecated, still served
RETIRED = "echo-2024-01-01"
DEPRECATED_ON = date(2026, 1, 15)
SUNSET_ON = date(2026, 7, 1)
DEPRECATION_VALUE = "@1768435200"  # 2026-01-15T00:00:00Z
SUNSET_VALUE = "Wed, 01 Jul 2026 00:00:00 GMT"


def versioned_settings(*others: ModelSettings, current: dict[str, object] | None = None) -> Settings:
    (echo,) = echo_settings().models
    older = [
        SnapshotSettings(id=PINNED, deprecated=DEPRECATED_ON, sunset=SUNSET_ON, replacement=ECHO_ALIAS),
        SnapshotSettings(id=RETIRED, retired=True, replacement=ECHO_SNAPSHOT),
    ]
    versioned = EchoModel.model_validate({**echo.model_dump(), "previous_snapshots": older, **(current or {})})
    return Settings(models=[versioned, *others])


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(versioned_settings()) as (client, _):
        yield client


def chat(model: str, **fields: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4, **fields}


def assert_deprecated(response: httpx.Response) -> None:
    assert response.headers["deprecation"] == DEPRECATION_VALUE
    assert response.headers["sunset"] == SUNSET_VALUE
    assert parsedate_to_datetime(response.headers["sunset"]).date() == SUNSET_ON
    assert response.headers["link"] == f'</v1/models/{ECHO_ALIAS}>; rel="successor-version"'
    assert response.headers["x-model-replacement"] == ECHO_ALIAS


def assert_not_deprecated(response: httpx.Response) -> None:
    assert not {"deprecation", "sunset", "x-model-replacement"} & set(response.headers)


async def test_alias_answers_as_the_current_snapshot_without_deprecation(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=chat(ECHO_ALIAS))

    assert response.status_code == 200, response.text
    assert response.json()["model"] == ECHO_SNAPSHOT
    assert_not_deprecated(response)


async def test_pinned_older_snapshot_answers_as_itself_with_deprecation_headers(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=chat(PINNED))

    assert response.status_code == 200, response.text
    assert response.json()["model"] == PINNED
    assert response.json()["choices"][0]["message"]["content"]
    assert_deprecated(response)


async def test_deprecated_snapshot_stream_carries_the_headers(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=chat(PINNED, stream=True))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert_deprecated(response)
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert '"model":"' + PINNED + '"' in events[0].replace(" ", "")


async def test_deprecated_snapshot_completions_and_predict_carry_the_headers(http: httpx.AsyncClient) -> None:
    completion = await http.post("/v1/completions", json={"model": PINNED, "prompt": "hi", "max_tokens": 3})
    prediction = await http.post(f"/v1/models/{PINNED}/predict", json={"input": "hi", "max_tokens": 3})

    assert completion.status_code == prediction.status_code == 200
    assert completion.json()["model"] == prediction.json()["model"] == PINNED
    assert_deprecated(completion)
    assert_deprecated(prediction)


async def test_get_model_by_deprecated_snapshot_carries_the_headers(http: httpx.AsyncClient) -> None:
    pinned = await http.get(f"/v1/models/{PINNED}")
    alias = await http.get(f"/v1/models/{ECHO_ALIAS}")

    assert pinned.status_code == alias.status_code == 200
    assert pinned.json()["id"] == ECHO_ALIAS
    assert pinned.json()["snapshot"] == PINNED
    assert alias.json()["snapshot"] == ECHO_SNAPSHOT
    assert_deprecated(pinned)
    assert_not_deprecated(alias)


async def test_errors_of_a_request_naming_a_deprecated_snapshot_carry_the_headers(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=chat(PINNED, n=99))

    assert response.status_code == 400
    assert_deprecated(response)


async def test_model_list_shows_each_snapshot_with_its_status(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/models")

    (model,) = response.json()["data"]
    assert model["id"] == ECHO_ALIAS
    assert model["snapshots"] == [
        {"id": ECHO_SNAPSHOT, "status": "active", "deprecated_at": None, "sunset_at": None, "replacement": None},
        {
            "id": PINNED,
            "status": "deprecated",
            "deprecated_at": 1768435200,
            "sunset_at": 1782864000,
            "replacement": ECHO_ALIAS,
        },
        {"id": RETIRED, "status": "retired", "deprecated_at": None, "sunset_at": None, "replacement": ECHO_SNAPSHOT},
    ]
    assert_not_deprecated(response)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", chat(RETIRED)),
        ("POST", "/v1/chat/completions", chat(RETIRED, stream=True)),
        ("POST", "/v1/completions", {"model": RETIRED, "prompt": "hi"}),
        ("POST", f"/v1/models/{RETIRED}/predict", {"input": "hi"}),
        ("GET", f"/v1/models/{RETIRED}", None),
    ],
)
async def test_retired_snapshot_is_410_naming_the_replacement(
    http: httpx.AsyncClient, method: str, path: str, body: dict[str, object] | None
) -> None:
    response = await http.request(method, path, json=body)

    assert response.status_code == 410
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "model_retired"
    assert error["param"] == "model"
    assert error["replacement"] == ECHO_SNAPSHOT
    assert RETIRED in error["message"] and ECHO_SNAPSHOT in error["message"]


async def test_deprecated_current_snapshot_marks_the_alias_too() -> None:
    successor_model = EchoModel(alias="next", snapshot="next-1")
    deprecation = {"deprecated": DEPRECATED_ON, "sunset": SUNSET_ON, "replacement": "next"}
    async with asgi_client(versioned_settings(successor_model, current=deprecation)) as (http, _):
        by_alias = await http.post("/v1/chat/completions", json=chat(ECHO_ALIAS))
        successor = await http.post("/v1/chat/completions", json=chat("next"))

    assert by_alias.status_code == successor.status_code == 200
    assert by_alias.headers["deprecation"] == DEPRECATION_VALUE
    assert by_alias.headers["x-model-replacement"] == "next"
    assert by_alias.headers["link"] == '</v1/models/next>; rel="successor-version"'
    assert_not_deprecated(successor)


async def test_stored_completions_of_a_retired_snapshot_can_still_be_listed(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/chat/completions", params={"model": RETIRED})

    assert response.status_code == 200
    assert response.json()["data"] == []


async def test_moving_the_alias_keeps_the_old_snapshot_pinnable() -> None:
    (echo,) = echo_settings().models
    moved = EchoModel.model_validate(
        {**echo.model_dump(), "snapshot": "echo-2026-02-01", "previous_snapshots": [{"id": ECHO_SNAPSHOT}]}
    )
    async with asgi_client(Settings(models=[moved])) as (http, _):
        by_alias = await http.post("/v1/chat/completions", json=chat(ECHO_ALIAS))
        pinned = await http.post("/v1/chat/completions", json=chat(ECHO_SNAPSHOT))

    assert by_alias.json()["model"] == "echo-2026-02-01"
    assert pinned.json()["model"] == ECHO_SNAPSHOT
    assert_not_deprecated(pinned)  # an older snapshot with no end announced is simply served


@pytest.mark.model
async def test_deprecated_embeddings_snapshot_carries_the_headers() -> None:
    minilm = SentenceTransformersModel(
        alias="all-minilm-l6-v2",
        snapshot="all-minilm-l6-v2-current",
        previous_snapshots=[
            SnapshotSettings(id="minilm-old", deprecated=DEPRECATED_ON, sunset=SUNSET_ON, replacement=ECHO_ALIAS),
            SnapshotSettings(id="minilm-older", retired=True, replacement="all-minilm-l6-v2"),
        ],
    )
    async with asgi_client(Settings(models=[*echo_settings().models, minilm])) as (http, _):
        pinned = await http.post("/v1/embeddings", json={"model": "minilm-old", "input": "a fox"})
        retired = await http.post("/v1/embeddings", json={"model": "minilm-older", "input": "a fox"})

    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["model"] == "minilm-old"
    assert len(pinned.json()["data"][0]["embedding"]) == 384
    assert_deprecated(pinned)
    assert retired.status_code == 410
    assert retired.json()["error"]["replacement"] == "all-minilm-l6-v2"


async def test_idempotent_replay_repeats_the_deprecation_headers(http: httpx.AsyncClient) -> None:
    headers = {"idempotency-key": "versioning-replay-1"}
    first = await http.post("/v1/chat/completions", json=chat(PINNED), headers=headers)
    replay = await http.post("/v1/chat/completions", json=chat(PINNED), headers=headers)

    assert first.status_code == replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    assert_deprecated(replay)
