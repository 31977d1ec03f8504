"""The semantic cache with the real all-MiniLM-L6-v2 and both backends (memory, the real Redis): similar last
messages hit, anything else that differs misses, and only opted-in requests without tools take part."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from portico.cache.semantic import MemorySemanticCache, RedisSemanticCache, SemanticBackend
from portico.constants import CacheMode, CacheStatus
from portico.engines.registry import ModelRegistry
from portico.engines.sentence_transformers import SentenceTransformersEngine
from portico.schemas.chat import AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest
from portico.schemas.common import PromptTokensDetails, Usage
from portico.schemas.completions import CompletionRequest
from portico.services.semantic_cache import SemanticCache, SemanticLookup, build_semantic_cache
from portico.settings import EchoModel, Settings
from tests.cache.conftest import REDIS_URL
from tests.engines.conftest import minilm_engine  # noqa: F401 (the fixture, loaded once per session)

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="session")]

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
SNAPSHOT = "smollm2-test"
QUESTION = "What is the capital of France?"
PARAPHRASE = "what's the capital city of France?"
UNRELATED = "How do I bake sourdough bread at home?"
# Measured with all-MiniLM-L6-v2 (test_the_threshold_separates_paraphrases_from_other_questions prints them):
# QUESTION vs PARAPHRASE 0.957, QUESTION vs "What is the capital of Germany?" 0.663, vs UNRELATED 0.100.
# 0.9 keeps a margin on both sides (the default, 0.95, only just admits this paraphrase).
THRESHOLD = 0.9


def chat(text: str = QUESTION, *, history: list[dict[str, Any]] | None = None, **fields: Any) -> ChatCompletionRequest:
    messages = [*(history or []), {"role": "user", "content": text}]
    return ChatCompletionRequest.model_validate({"model": "smollm2", "temperature": 0, "messages": messages, **fields})


def answer(text: str = "Paris.") -> ChatCompletion:
    return ChatCompletion(
        id="chatcmpl-1",
        created=1,
        model=SNAPSHOT,
        choices=[ChatChoice(index=0, message=AssistantMessage(content=text), finish_reason="stop")],
        usage=Usage(
            prompt_tokens=9,
            completion_tokens=2,
            total_tokens=11,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=0),
            cost=0.001,
        ),
    )


def redis_client() -> Redis:
    return Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)


@asynccontextmanager
async def redis_backend(prefix: str | None = None) -> AsyncIterator[SemanticBackend]:
    """The real Redis under a fresh prefix, on the session's event loop; its keys removed afterwards."""
    prefix = prefix or f"portico:test:semantic:{uuid4().hex}:"
    backend = RedisSemanticCache(redis_client(), prefix=prefix, max_entries_per_bucket=8)
    try:
        yield backend
    finally:
        cleaner = redis_client()
        keys = [key async for key in cleaner.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await cleaner.delete(*keys)
        await cleaner.aclose()
        await backend.close()


@asynccontextmanager
async def memory_backend() -> AsyncIterator[SemanticBackend]:
    yield MemorySemanticCache(max_entries_per_bucket=8, max_entries=100, max_bytes=1 << 20)


def semantic_cache(backend: SemanticBackend, embedder: SentenceTransformersEngine) -> SemanticCache:
    return SemanticCache(backend, embedder, embedding_model="all-minilm-l6-v2", threshold=THRESHOLD, ttl_s=60)


@pytest_asyncio.fixture(loop_scope="session", params=["memory", "redis"])
async def cache(
    request: pytest.FixtureRequest,
    minilm_engine: SentenceTransformersEngine,  # noqa: F811 (the fixture)
) -> AsyncIterator[SemanticCache]:
    backend: AbstractAsyncContextManager[SemanticBackend] = (
        memory_backend() if request.param == "memory" else redis_backend()
    )
    async with backend as opened:
        yield semantic_cache(opened, minilm_engine)


async def look(
    cache: SemanticCache,
    body: ChatCompletionRequest | CompletionRequest,
    *,
    project: str = "proj_a",
    endpoint: str = CHAT,
    snapshot: str = SNAPSHOT,
    mode: CacheMode = CacheMode.USE,
    requested: bool | None = None,
    model_opt_in: bool = True,
) -> SemanticLookup:
    return await cache.lookup(project, endpoint, snapshot, body, mode, requested=requested, model_opt_in=model_opt_in)


async def stored(cache: SemanticCache, body: ChatCompletionRequest, text: str = "Paris.", **where: Any) -> None:
    lookup = await look(cache, body, **where)
    assert lookup.status is CacheStatus.MISS
    await cache.store(lookup, answer(text))


async def test_the_threshold_separates_paraphrases_from_other_questions(
    minilm_engine: SentenceTransformersEngine,  # noqa: F811 (the fixture)
) -> None:
    async def similarity(first: str, second: str) -> float:
        memory = MemorySemanticCache(max_entries_per_bucket=1, max_entries=1, max_bytes=1 << 20)
        probe = SemanticCache(memory, minilm_engine, embedding_model="m", threshold=1e-6, ttl_s=60)
        await stored(probe, chat(first))
        hit = await look(probe, chat(second))
        assert hit.similarity is not None
        return hit.similarity

    paraphrase = await similarity(QUESTION, PARAPHRASE)
    other_country = await similarity(QUESTION, "What is the capital of Germany?")
    unrelated = await similarity(QUESTION, UNRELATED)
    print(f"paraphrase {paraphrase:.4f}, other country {other_country:.4f}, unrelated {unrelated:.4f}")
    assert paraphrase >= THRESHOLD > other_country > unrelated


async def test_a_paraphrase_gets_the_stored_answer_with_its_similarity(cache: SemanticCache) -> None:
    assert (await look(cache, chat(PARAPHRASE))).status is CacheStatus.MISS  # nothing stored yet
    await stored(cache, chat(QUESTION))
    hit = await look(cache, chat(PARAPHRASE))
    assert hit.status is CacheStatus.HIT
    assert hit.stored is not None and hit.stored["choices"][0]["message"]["content"] == "Paris."
    assert hit.similarity is not None and THRESHOLD <= hit.similarity < 1
    same = await look(cache, chat(QUESTION))
    assert same.similarity == pytest.approx(1.0, abs=1e-5)


async def test_the_most_similar_stored_answer_wins(cache: SemanticCache) -> None:
    await stored(cache, chat(UNRELATED), "Knead, rest, bake.")
    await stored(cache, chat(QUESTION), "Paris.")
    hit = await look(cache, chat(PARAPHRASE))
    assert hit.stored is not None and hit.stored["choices"][0]["message"]["content"] == "Paris."
    bread = await look(cache, chat("How can I bake sourdough bread at home?"))
    assert bread.stored is not None and bread.stored["choices"][0]["message"]["content"] == "Knead, rest, bake."


async def test_an_unrelated_question_misses(cache: SemanticCache) -> None:
    await stored(cache, chat(QUESTION))
    assert (await look(cache, chat(UNRELATED))).status is CacheStatus.MISS
    assert (await look(cache, chat("What is the capital of Germany?"))).status is CacheStatus.MISS


async def test_a_hit_never_crosses_projects_models_endpoints_or_parameters(cache: SemanticCache) -> None:
    await stored(cache, chat(QUESTION))
    assert (await look(cache, chat(PARAPHRASE), project="proj_b")).status is CacheStatus.MISS
    assert (await look(cache, chat(PARAPHRASE), snapshot="smollm2-newer")).status is CacheStatus.MISS
    assert (await look(cache, chat(PARAPHRASE, max_tokens=5))).status is CacheStatus.MISS
    assert (await look(cache, chat(PARAPHRASE, seed=7))).status is CacheStatus.MISS
    system = {"role": "system", "content": "Answer in French."}
    assert (await look(cache, chat(PARAPHRASE, history=[system]))).status is CacheStatus.MISS
    assert (await look(cache, chat(PARAPHRASE), endpoint="/v1/other")).status is CacheStatus.MISS
    # what does not change the answer does not split the bucket
    assert (await look(cache, chat(PARAPHRASE, user="u", metadata={"k": "v"}))).status is CacheStatus.HIT


async def test_a_different_conversation_history_misses(cache: SemanticCache) -> None:
    history = [
        {"role": "user", "content": "Let's talk about Texas."},
        {"role": "assistant", "content": "Sure, what about Texas?"},
    ]
    await stored(cache, chat(QUESTION, history=history), "Austin.")
    other = [
        {"role": "user", "content": "Let's talk about Europe."},
        {"role": "assistant", "content": "Sure, what about Europe?"},
    ]
    assert (await look(cache, chat(PARAPHRASE, history=other))).status is CacheStatus.MISS
    assert (await look(cache, chat(PARAPHRASE))).status is CacheStatus.MISS
    hit = await look(cache, chat(PARAPHRASE, history=history))
    assert hit.stored is not None and hit.stored["choices"][0]["message"]["content"] == "Austin."


class ChatWithTools(ChatCompletionRequest):
    """A chat request offering tools, as OpenAI's schema has them."""

    tools: list[dict[str, Any]] | None = None
    tool_choice: str | None = None


async def test_requests_with_tools_never_use_it(cache: SemanticCache) -> None:
    await stored(cache, chat(QUESTION))
    tool = {"type": "function", "function": {"name": "lookup_capital", "parameters": {"type": "object"}}}
    body = {"model": "smollm2", "temperature": 0, "messages": [{"role": "user", "content": QUESTION}]}
    with_tools = ChatWithTools.model_validate({**body, "tools": [tool]})
    with_choice = ChatWithTools.model_validate({**body, "tool_choice": "auto"})
    for offered in (with_tools, with_choice):
        assert (await look(cache, offered, requested=True)).status is CacheStatus.BYPASS
    assert (await look(cache, chat(QUESTION), requested=True)).status is CacheStatus.HIT  # the same without tools


async def test_sampled_requests_take_part_only_when_they_ask(cache: SemanticCache) -> None:
    sampled = chat(QUESTION, temperature=0.8)
    assert (await look(cache, sampled, model_opt_in=True)).status is CacheStatus.BYPASS
    await stored(cache, sampled, requested=True, model_opt_in=False)
    hit = await look(cache, chat(PARAPHRASE, temperature=0.8), requested=True, model_opt_in=False)
    assert hit.status is CacheStatus.HIT


async def test_opt_in_comes_from_the_model_or_the_request_and_off_wins(cache: SemanticCache) -> None:
    await stored(cache, chat(QUESTION))
    assert (await look(cache, chat(PARAPHRASE), model_opt_in=False)).status is CacheStatus.BYPASS
    assert (await look(cache, chat(PARAPHRASE), requested=True, model_opt_in=False)).status is CacheStatus.HIT
    assert (await look(cache, chat(PARAPHRASE), requested=False, model_opt_in=True)).status is CacheStatus.BYPASS


async def test_no_store_skips_it_and_no_cache_refreshes_it(cache: SemanticCache) -> None:
    skipped = await look(cache, chat(QUESTION), mode=CacheMode.SKIP)
    assert skipped.status is CacheStatus.BYPASS
    await cache.store(skipped, answer("Lyon."))
    assert (await look(cache, chat(PARAPHRASE))).status is CacheStatus.MISS  # nothing was stored

    await stored(cache, chat(QUESTION), "Paris.")
    refresh = await look(cache, chat(QUESTION), mode=CacheMode.REFRESH)
    assert refresh.status is CacheStatus.MISS  # not read, although an answer is stored
    await cache.store(refresh, answer("Paris, France."))
    hit = await look(cache, chat(PARAPHRASE))
    assert hit.stored is not None and hit.stored["choices"][0]["message"]["content"] == "Paris, France."


async def test_a_hit_is_not_stored_again(cache: SemanticCache) -> None:
    await stored(cache, chat(QUESTION), "Paris.")
    hit = await look(cache, chat(PARAPHRASE))
    await cache.store(hit, answer("Something else."))
    again = await look(cache, chat(PARAPHRASE))
    assert again.stored is not None and again.stored["choices"][0]["message"]["content"] == "Paris."


async def test_forget_project_drops_only_that_projects_answers(cache: SemanticCache) -> None:
    await stored(cache, chat(QUESTION), project="proj_a")
    await stored(cache, chat(QUESTION), project="proj_ab")
    await cache.forget_project("proj_a")
    assert (await look(cache, chat(PARAPHRASE), project="proj_a")).status is CacheStatus.MISS
    assert (await look(cache, chat(PARAPHRASE), project="proj_ab")).status is CacheStatus.HIT


async def test_completions_compare_their_one_prompt(cache: SemanticCache) -> None:
    def completion(prompt: str | list[str]) -> CompletionRequest:
        return CompletionRequest.model_validate({"model": "smollm2", "temperature": 0, "prompt": prompt})

    first = await look(cache, completion(QUESTION), endpoint=COMPLETIONS)
    assert first.status is CacheStatus.MISS
    await cache.store(first, answer())
    assert (await look(cache, completion(PARAPHRASE), endpoint=COMPLETIONS)).status is CacheStatus.HIT
    assert (await look(cache, completion([PARAPHRASE]), endpoint=COMPLETIONS)).status is CacheStatus.HIT
    several = completion([PARAPHRASE, UNRELATED])
    assert (await look(cache, several, endpoint=COMPLETIONS)).status is CacheStatus.BYPASS


async def test_a_text_longer_than_the_embedding_window_is_not_cached(cache: SemanticCache) -> None:
    long = QUESTION + " Please explain." * 200  # far beyond all-MiniLM-L6-v2's 256 tokens
    assert (await look(cache, chat(long))).status is CacheStatus.BYPASS


async def test_without_the_embedding_model_it_is_off_unless_a_model_opts_in() -> None:
    echo = {"alias": "echo", "snapshot": "echo-1", "engine": "echo"}
    plain = Settings(models=[EchoModel.model_validate(echo)])
    assert build_semantic_cache(plain, ModelRegistry(plain.models, plain.queue)) is None
    opted = Settings(models=[EchoModel.model_validate({**echo, "semantic_cache": True})])
    with pytest.raises(ValueError, match=r"semantic_cache is on for echo.*'all-minilm-l6-v2'"):
        build_semantic_cache(opted, ModelRegistry(opted.models, opted.queue))


async def test_processes_sharing_a_redis_share_answers(
    minilm_engine: SentenceTransformersEngine,  # noqa: F811 (the fixture)
) -> None:
    prefix = f"portico:test:semantic:{uuid4().hex}:"
    async with redis_backend(prefix) as one, redis_backend(prefix) as other:
        await stored(semantic_cache(one, minilm_engine), chat(QUESTION))
        hit = await look(semantic_cache(other, minilm_engine), chat(PARAPHRASE))
        assert hit.stored is not None and hit.stored["choices"][0]["message"]["content"] == "Paris."


async def test_an_unreachable_redis_is_a_miss_and_a_dropped_write(
    minilm_engine: SentenceTransformersEngine,  # noqa: F811 (the fixture)
) -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    cache = semantic_cache(RedisSemanticCache(client, prefix="portico:test:", max_entries_per_bucket=8), minilm_engine)
    await stored(cache, chat(QUESTION))
    assert (await look(cache, chat(QUESTION))).status is CacheStatus.MISS
    await cache.close()
