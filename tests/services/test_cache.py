"""Cache keys and cacheability: what makes two requests the same answer, and what keeps projects apart."""

from __future__ import annotations

from portico.schemas.chat import ChatCompletionRequest
from portico.schemas.embeddings import EmbeddingRequest
from portico.services.cache import cache_key, deterministic


def chat(**fields: object) -> ChatCompletionRequest:
    body = {"model": "alias", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, **fields}
    return ChatCompletionRequest.model_validate(body)


def key(body: ChatCompletionRequest, project: str = "proj_a", snapshot: str = "m-2026-01-01") -> str:
    return cache_key(project, "/v1/chat/completions", snapshot, body)


def test_the_key_is_scoped_to_project_snapshot_and_endpoint() -> None:
    body = chat()
    assert key(body) == key(chat())
    assert key(body, project="proj_b") != key(body)
    assert key(body, snapshot="m-2026-02-01") != key(body)
    assert cache_key("proj_a", "/v1/completions", "m-2026-01-01", body) != key(body)
    assert key(body).startswith("proj_a:")


def test_fields_that_dont_change_the_answer_dont_change_the_key() -> None:
    plain = key(chat())
    assert key(chat(model="another-alias-of-the-same-snapshot")) == plain  # the snapshot is what counts
    assert key(chat(stream=True, stream_options={"include_usage": True})) == plain
    assert key(chat(user="u", metadata={"k": "v"}, store=True)) == plain
    assert key(chat(max_tokens=None, seed=None)) == plain  # explicit defaults are the defaults
    assert key(chat(max_tokens=5)) != plain
    assert key(chat(response_format={"type": "json_object"})) != plain
    assert key(chat(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])) != plain


def test_only_deterministic_requests_are_cacheable() -> None:
    assert deterministic(chat())
    assert deterministic(chat(temperature=1.0, seed=1))
    assert not deterministic(chat(temperature=0.2))
    assert deterministic(EmbeddingRequest.model_validate({"model": "e", "input": "x"}))
