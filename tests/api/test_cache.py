"""The response cache through the full app: X-Cache-Status, project scoping, Cache-Control, billing and limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from portico.constants import Scope
from portico.services.admin import AdminService
from portico.settings import PricingSettings, SentenceTransformersModel, Settings
from tests.conftest import ECHO_ALIAS, asgi_client, auth_settings, bearer, echo_settings, make_key, sse_events

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
SCOPES = [Scope.INFERENCE, Scope.USAGE_READ]


def priced(settings: Settings) -> Settings:
    settings.models[0].pricing = PricingSettings(input_per_million=1_000.0, output_per_million=2_000.0)
    return settings


def chat(content: str = "the same question", **extra: Any) -> dict[str, Any]:
    return {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}


@pytest.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    async with asgi_client(priced(auth_settings())) as pair:
        yield pair


async def project_key(app: FastAPI, name: str, **limits: int) -> dict[str, str]:
    admin: AdminService = app.state.runtime.control.admin
    project = await admin.create_project(app.state.runtime.control.local_principal.organization_id, name)
    return bearer(await make_key(app, project=project.id, scopes=SCOPES, limits=limits or None))


async def usage_totals(client: httpx.AsyncClient, app: FastAPI, key: dict[str, str]) -> dict[str, Any]:
    await app.state.runtime.control.meter.recorder.flush()
    report = await client.get("/v1/usage", headers=key)
    assert report.status_code == 200, report.text
    totals: dict[str, Any] = report.json()["totals"]
    return totals


async def test_no_hit_crosses_projects(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    key_a, key_b = await project_key(app, "a"), await project_key(app, "b")

    first_a = await client.post(CHAT, json=chat(), headers=key_a)
    again_a = await client.post(CHAT, json=chat(), headers=key_a)
    assert (first_a.headers["x-cache-status"], again_a.headers["x-cache-status"]) == ("miss", "hit")

    # The same body from another project: generated and billed, never answered from project a's entry.
    first_b = await client.post(CHAT, json=chat(), headers=key_b)
    assert first_b.status_code == 200
    assert first_b.headers["x-cache-status"] == "miss"
    assert first_b.json()["usage"]["cost"] == first_a.json()["usage"]["cost"] > 0
    assert first_b.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    totals_b = await usage_totals(client, app, key_b)
    assert totals_b["requests"] == 1 and totals_b["cost_usd"] == pytest.approx(first_a.json()["usage"]["cost"])
    # …and project b then has its own entry.
    assert (await client.post(CHAT, json=chat(), headers=key_b)).headers["x-cache-status"] == "hit"


async def test_a_hit_is_the_same_answer_free_and_in_usage(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    key = await project_key(app, "p")
    miss = await client.post(CHAT, json=chat(max_tokens=8), headers=key)
    hit = await client.post(CHAT, json=chat(max_tokens=8), headers=key)
    assert miss.status_code == hit.status_code == 200
    first, second = miss.json(), hit.json()

    assert second["choices"] == first["choices"] and second["model"] == first["model"]
    assert second["id"] != first["id"] and second["id"].startswith("chatcmpl-")
    usage = second["usage"]
    assert usage["cost"] == 0 and first["usage"]["cost"] > 0
    assert usage["prompt_tokens"] == first["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == first["usage"]["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"]
    assert hit.headers["x-request-cost"] == "0"

    totals = await usage_totals(client, app, key)
    assert totals["requests"] == 2
    assert totals["cost_usd"] == pytest.approx(first["usage"]["cost"])
    assert totals["cached_tokens"] == usage["prompt_tokens"]


async def test_only_what_changes_the_answer_changes_the_key(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    key = await project_key(app, "p")

    async def status(body: dict[str, Any]) -> str:
        response = await client.post(CHAT, json=body, headers=key)
        assert response.status_code == 200, response.text
        return response.headers["x-cache-status"]

    assert await status(chat(max_tokens=8)) == "miss"
    assert await status(chat(max_tokens=9)) == "miss"
    assert await status(chat("another question", max_tokens=8)) == "miss"
    assert await status(chat(max_tokens=8, stop=["zzz"])) == "miss"
    assert await status(chat(max_tokens=8, n=2)) == "miss"
    # Fields that don't change the answer share the entry.
    assert await status(chat(max_tokens=8, user="someone", metadata={"a": "b"})) == "hit"
    assert await status(chat(max_tokens=8, n=2)) == "hit"


async def test_sampling_without_a_seed_and_streams_bypass(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    key = await project_key(app, "p")
    for _ in range(2):
        sampled = await client.post(CHAT, json=chat(temperature=0.7), headers=key)
        assert sampled.headers["x-cache-status"] == "bypass" and sampled.json()["usage"]["cost"] > 0

    # A fixed seed makes sampling repeatable: cached.
    seeded = [await client.post(CHAT, json=chat(temperature=0.7, seed=7), headers=key) for _ in range(2)]
    assert [response.headers["x-cache-status"] for response in seeded] == ["miss", "hit"]

    # A stream of a cached body is generated anew, and says so.
    await client.post(CHAT, json=chat(), headers=key)
    streamed = await client.post(CHAT, json=chat(stream=True), headers=key)
    assert streamed.headers["x-cache-status"] == "bypass"
    assert sse_events(streamed.text)[-1] == "[DONE]"


async def test_cache_control_no_store_and_no_cache(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    key = await project_key(app, "p")

    async def status(body: dict[str, Any], cache_control: str | None = None) -> str:
        headers = key if cache_control is None else {**key, "cache-control": cache_control}
        response = await client.post(CHAT, json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response.headers["x-cache-status"]

    # no-store: neither read nor written.
    assert await status(chat("one"), "no-store") == "bypass"
    assert await status(chat("one")) == "miss"
    assert await status(chat("one"), "No-Store") == "bypass"  # an entry exists, and is not read
    # no-cache: not read, but the fresh answer is stored.
    assert await status(chat("two"), "no-cache") == "miss"
    assert await status(chat("two")) == "hit"
    assert await status(chat("two"), "max-age=0, no-cache") == "miss"


async def test_a_hit_counts_as_a_request_but_reserves_no_tokens(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    probe = await client.post(CHAT, json=chat(max_tokens=8), headers=await project_key(app, "probe"))
    reservation = probe.json()["usage"]["prompt_tokens"] + 8

    # Room for one request's tokens: a second generation is refused, the cached answer is not.
    key = await project_key(app, "tokens", tokens_per_minute=reservation)
    assert (await client.post(CHAT, json=chat(max_tokens=8), headers=key)).status_code == 200
    refused = await client.post(CHAT, json=chat("other words", max_tokens=8), headers=key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "tokens_per_minute"
    hit = await client.post(CHAT, json=chat(max_tokens=8), headers=key)
    assert hit.status_code == 200 and hit.headers["x-cache-status"] == "hit"

    # Each hit is one request against requests_per_minute.
    key = await project_key(app, "requests", requests_per_minute=2)
    assert [(await client.post(CHAT, json=chat(), headers=key)).status_code for _ in range(3)] == [200, 200, 429]


async def test_erasing_a_projects_data_drops_its_cached_answers(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    admin: AdminService = app.state.runtime.control.admin
    organization = app.state.runtime.control.local_principal.organization_id
    erased, other = await admin.create_project(organization, "erased"), await admin.create_project(organization, "b")
    key = bearer(await make_key(app, project=erased.id, scopes=SCOPES))
    other_key = bearer(await make_key(app, project=other.id, scopes=SCOPES))
    for headers in (key, other_key):
        await client.post(CHAT, json=chat(), headers=headers)

    admin_key = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN]))
    assert (await client.delete(f"/v1/projects/{erased.id}/data", headers=admin_key)).status_code == 200
    assert (await client.post(CHAT, json=chat(), headers=key)).headers["x-cache-status"] == "miss"
    assert (await client.post(CHAT, json=chat(), headers=other_key)).headers["x-cache-status"] == "hit"


async def test_completions_are_cached_too(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    key = await project_key(app, "p")
    body = {"model": ECHO_ALIAS, "prompt": "say it again", "temperature": 0, "max_tokens": 8}
    miss = await client.post(COMPLETIONS, json=body, headers=key)
    hit = await client.post(COMPLETIONS, json=body, headers=key)
    assert (miss.headers["x-cache-status"], hit.headers["x-cache-status"]) == ("miss", "hit")
    assert hit.json()["choices"] == miss.json()["choices"] and hit.json()["usage"]["cost"] == 0
    streamed = await client.post(COMPLETIONS, json={**body, "stream": True}, headers=key)
    assert streamed.headers["x-cache-status"] == "bypass"


async def test_the_cache_can_be_turned_off() -> None:
    async with asgi_client(echo_settings(cache={"enabled": False})) as (client, _):
        statuses = [(await client.post(CHAT, json=chat())).headers["x-cache-status"] for _ in range(2)]
    assert statuses == ["bypass", "bypass"]


@pytest.mark.model
async def test_embeddings_are_cached() -> None:
    minilm = SentenceTransformersModel(alias="minilm", snapshot="minilm-test")
    minilm.pricing = PricingSettings(input_per_million=1_000.0)
    async with asgi_client(Settings(models=[minilm])) as (client, _):
        body = {"model": "minilm", "input": ["a cached sentence", "another one"]}
        miss = await client.post("/v1/embeddings", json=body)
        hit = await client.post("/v1/embeddings", json=body)
        base64 = await client.post("/v1/embeddings", json={**body, "encoding_format": "base64"})
    assert (miss.headers["x-cache-status"], hit.headers["x-cache-status"]) == ("miss", "hit")
    assert hit.json()["data"] == miss.json()["data"]
    assert hit.json()["usage"]["cost"] == 0 < miss.json()["usage"]["cost"]
    assert base64.headers["x-cache-status"] == "miss"
