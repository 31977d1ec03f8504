"""The semantic cache through the API, with the real all-MiniLM-L6-v2 embeddings: a paraphrase of an answered
question is answered from the cache with its similarity; X-Semantic-Cache turns it on and off per request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from portico.settings import CacheSettings, SemanticCacheSettings, SentenceTransformersModel, Settings
from tests.conftest import ECHO_ALIAS, asgi_client, echo_settings

pytestmark = pytest.mark.model

ASKED = "What is the capital of France?"
PARAPHRASE = "what's the capital city of France?"  # similarity 0.957 with ASKED (all-MiniLM-L6-v2)
UNRELATED = "What is the capital of Germany?"  # 0.663


def _chat(question: str, **params: object) -> dict[str, object]:
    return {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": question}], "max_tokens": 8, **params}


@pytest.fixture(scope="module")
def settings() -> Settings:
    echo = echo_settings().models[0].model_copy(update={"semantic_cache": True})
    minilm = SentenceTransformersModel(alias="all-minilm-l6-v2", snapshot="minilm-test")
    cache = CacheSettings(semantic=SemanticCacheSettings(threshold=0.9))
    return Settings(models=[echo, minilm], cache=cache)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(settings) as (http, _):
        yield http


async def test_a_paraphrase_is_a_hit_with_its_similarity(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/chat/completions", json=_chat(ASKED, temperature=0))
    assert first.status_code == 200 and first.headers["x-cache-status"] == "miss"
    hit = await client.post("/v1/chat/completions", json=_chat(PARAPHRASE, temperature=0))
    assert hit.status_code == 200, hit.text
    assert hit.headers["x-cache-status"] == "hit" and 0.9 <= float(hit.headers["x-cache-similarity"]) < 1
    # The echo model repeats the prompt: the cached answer is the first question's, not the paraphrase's.
    assert hit.json()["choices"] == first.json()["choices"] and hit.json()["usage"]["cost"] == 0
    assert "x-served-by" not in hit.headers
    other = await client.post("/v1/chat/completions", json=_chat(UNRELATED, temperature=0))
    assert other.headers["x-cache-status"] == "miss" and "x-cache-similarity" not in other.headers


async def test_the_request_header_decides_over_the_model(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=_chat(ASKED, temperature=0))
    off = await client.post(
        "/v1/chat/completions", json=_chat(PARAPHRASE, temperature=0), headers={"X-Semantic-Cache": "off"}
    )
    assert off.headers["x-cache-status"] == "miss" and "x-cache-similarity" not in off.headers
    # Sampled requests are left out unless they ask; asked, they are answered from the cache too.
    sampled = await client.post("/v1/chat/completions", json=_chat(PARAPHRASE, temperature=0.8))
    assert sampled.headers["x-cache-status"] == "bypass"
    asked = await client.post(
        "/v1/chat/completions", json=_chat(ASKED, temperature=0.8), headers={"X-Semantic-Cache": "on"}
    )
    assert asked.headers["x-cache-status"] == "miss"  # sampled answers are a bucket of their own
    again = await client.post(
        "/v1/chat/completions", json=_chat(PARAPHRASE, temperature=0.8), headers={"X-Semantic-Cache": "on"}
    )
    assert again.headers["x-cache-status"] == "hit" and "x-cache-similarity" in again.headers
    bad = await client.post("/v1/chat/completions", json=_chat(ASKED), headers={"X-Semantic-Cache": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Semantic-Cache"
