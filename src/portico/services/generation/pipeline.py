"""The one path of every request that generates: cache → fallback chain → backend → meter.

Chat, completions, embeddings, predict, conversation turns and their context summaries, jobs and batch lines
all enter here. A request gets one ``Charge`` (admitted by the first attempt, re-targeted by a fallback's,
settled once however it ends) and answers in the wire shapes of ``chunks.py``. A deterministic request may be
answered from the exact or the semantic response cache: no engine work, one request against the rate limits, a
usage record with cost 0. Only the named model's answers are cached. ``store: true`` keeps a chat completion
(streamed or not, local or upstream) for the stored-completions API.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from portico.auth.principal import Principal
from portico.constants import PREFIX_CHAT_COMPLETION, PREFIX_COMPLETION, CacheMode, CacheStatus, Priority, new_id
from portico.engines.registry import ModelRegistry, ServedModel
from portico.errors import ContentPolicyViolation, InvalidRequest
from portico.observability import metrics
from portico.safety.policy import DEFAULT_MODERATION_MODEL, ContentPolicy
from portico.schemas.chat import ChatCompletion, ChatCompletionRequest, ChatMessage
from portico.schemas.completions import Completion, CompletionRequest
from portico.schemas.embeddings import EmbeddingList, EmbeddingRequest
from portico.schemas.models import PredictRequest
from portico.schemas.moderations import OPENAI_MODERATION_MODELS, ModerationRequest
from portico.schemas.tokenize import TokenizeRequest
from portico.services.cache import BYPASS, CacheLookup, ResponseCache
from portico.services.generation import chunks
from portico.services.generation.fallback import BackendOptions, FallbackChain, chain
from portico.services.generation.guard import Guard, moderation_texts, outcome
from portico.services.generation.prompts import count_tokens
from portico.services.generation.types import (
    ENDPOINT_CHAT,
    ENDPOINT_COMPLETIONS,
    ENDPOINT_EMBEDDINGS,
    ENDPOINT_MODERATIONS,
    ENDPOINT_PREDICT,
    Call,
    Event,
    Moderated,
    OnDelta,
    Opened,
    PolicyWarning,
    TextRequest,
)
from portico.services.semantic_cache import SEMANTIC_BYPASS, SemanticCache
from portico.services.stored_completions import StoredCompletionService
from portico.usage.meter import Charge, Meter, OnAdmit
from portico.usage.tokens import TokenUsage


@dataclass(frozen=True, slots=True)
class Generated:
    """A sync answer: the endpoint's body (with ``usage.cost``), its charge, and how it was answered."""

    body: BaseModel  # ChatCompletion | Completion | EmbeddingList
    charge: Charge
    cache: CacheStatus = CacheStatus.BYPASS
    served_by: str | None = None  # the deployment that answered (None: the cache)
    similarity: float | None = None  # a semantic cache hit's similarity (X-Cache-Similarity)
    warnings: tuple[str, ...] = ()  # content policy warning codes (X-Content-Warning)


@dataclass(slots=True)
class Streamed:
    """A stream that is admitted and under way. Its ``events`` settle the charge however they end; ``close``
    (for the SSE response, whatever happened) settles it if they never ran, and frees what the backend holds."""

    call: Call
    charge: Charge
    opened: Opened
    completion_id: str
    warning: PolicyWarning | None = None  # the input's (a suspected prompt injection)
    events: AsyncGenerator[Event, None] = field(init=False)
    started: bool = False

    def __post_init__(self) -> None:
        self.events = self._settled()

    @property
    def served_by(self) -> str:
        return self.opened.origin.served_by

    @property
    def model(self) -> str:
        return self.opened.origin.snapshot

    async def _settled(self) -> AsyncGenerator[Event, None]:
        self.started = True
        with self.charge.settling():
            async with aclosing(self.opened.events) as events:
                async for event in events:
                    yield event

    def chunks(
        self,
        events: AsyncGenerator[Event, None] | None = None,
        *,
        include_usage: bool | None = None,
        usage_extras: dict[str, Any] | None = None,
        completion_id: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The wire chunks of ``events`` (default: this stream's), under ``completion_id`` (default: the one
        minted for it); usage at the end if the request asked."""
        body = self.call.body
        if include_usage is None:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
        source, chunk_id = events or self.events, completion_id or self.completion_id
        if isinstance(body, ChatCompletionRequest):
            return chunks.chat_chunks(
                source,
                self.charge,
                completion_id=chunk_id,
                model=self.model,
                body=body,
                include_usage=include_usage,
                usage_extras=usage_extras,
                warning=self.warning,
            )
        return chunks.completion_chunks(
            source,
            self.charge,
            completion_id=chunk_id,
            model=self.model,
            include_usage=include_usage,
            warning=self.warning,
        )

    def close(self) -> None:
        if not self.started:
            self.charge.settle(status=499, cancelled=True)
            self.opened.abandon()


def _validated(model: type[BaseModel], raw: dict[str, Any]) -> Any:
    """A request body from storage (a job, a batch line) checked as the endpoint would check it."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidRequest(f"Invalid request body: {where}: {first.get('msg')}.", param=where or None) from None


class Pipeline:
    def __init__(
        self,
        registry: ModelRegistry,
        meter: Meter,
        stored: StoredCompletionService,
        options: BackendOptions,
        *,
        background_timeout_s: float | None = None,
        cache: ResponseCache | None = None,
        semantic_cache: SemanticCache | None = None,
    ) -> None:
        self.registry = registry
        self.meter = meter
        self.stored = stored
        self.options = options
        self.background_timeout_s = background_timeout_s
        self.cache = cache
        self.semantic_cache = semantic_cache
        self.guard = Guard(self._moderated)

    def chain(self, model: str) -> FallbackChain:
        """The model ``model`` names, then its fallbacks: where a request may be answered (docs/gateway.md)."""
        return chain(self.registry, model, self.options)

    async def check(self, body: TextRequest | EmbeddingRequest) -> None:
        """Everything the endpoint would refuse before running ``body`` (a job checked when it is created)."""
        await self.chain(body.model).check(body)

    async def _moderated(self, model: str, texts: list[str], priority: Priority) -> Moderated:
        """A content policy's scores: part of the request being checked, not metered on their own."""
        moderated = await self.chain(model).moderate(texts, None, priority)
        metrics.texts_moderated(moderated.origin.snapshot, len(texts))
        return moderated

    async def _screened(self, call: Call, charge: Charge) -> PolicyWarning | None:
        """The caller's content policy on the call's input; a blocked request is recorded (0 tokens, why)."""
        policy = charge.principal.content_policy
        if policy is None or not call.moderated:
            return None
        try:
            return await self.guard.screen(call, policy)
        except ContentPolicyViolation as exc:
            served = self.registry.resolve(call.body.model)
            flagged = outcome("content_policy_violation", exc.details["categories"])
            await charge.refuse(model=served.snapshot, pricing=served.settings.pricing, outcome=flagged)
            raise

    def _checks_output(self, call: Call, principal: Principal) -> ContentPolicy | None:
        policy = principal.content_policy
        if policy is None or not call.moderated or policy.check == "input":
            return None
        return policy

    async def count_tokens(self, body: TokenizeRequest) -> tuple[ServedModel, int]:
        served = self.registry.resolve(body.model)
        return served, await count_tokens(served, body)

    # -- text ------------------------------------------------------------------------------------------------
    async def complete(
        self,
        call: Call,
        principal: Principal,
        *,
        cache: CacheMode = CacheMode.USE,
        semantic: bool | None = None,
        on_admit: OnAdmit | None = None,
    ) -> Generated:
        """The whole answer. ``semantic``: the request's ``X-Semantic-Cache`` (None: the model decides)."""
        generated = await self._complete(call, principal, cache, semantic, on_admit)
        body = call.body
        if isinstance(body, ChatCompletionRequest) and body.store and isinstance(generated.body, ChatCompletion):
            await self.stored.save(principal, body, generated.body)
        return generated

    async def _complete(
        self, call: Call, principal: Principal, cache: CacheMode, semantic: bool | None, on_admit: OnAdmit | None
    ) -> Generated:
        charge = Charge(self.meter, principal, call.endpoint, on_admit)
        warning = await self._screened(call, charge)
        way = self.chain(call.body.model)
        served = way.served
        response: type[ChatCompletion] | type[Completion] = ChatCompletion if call.chat else Completion
        lookup = await self._lookup(principal, call.endpoint, served, call.body, cache)
        if lookup.stored is not None:
            return await self._replay(response, lookup.stored, charge, served, call.on_delta)
        similar = SEMANTIC_BYPASS
        if self.semantic_cache is not None:
            similar = await self.semantic_cache.lookup(
                principal.project_id,
                call.endpoint,
                served.snapshot,
                call.body,
                cache,
                requested=semantic,
                model_opt_in=served.settings.semantic_cache,
            )
            metrics.cache_lookup("semantic", similar.status)
        if similar.stored is not None:
            replayed = await self._replay(response, similar.stored, charge, served, call.on_delta)
            return replace(replayed, similarity=similar.similarity)
        with charge.settling():
            answer = await way.complete(call, charge)
            if (policy := self._checks_output(call, principal)) is not None:
                answer = await self.guard.reviewed(answer, call, policy, charge)
        warnings = [w for w in (warning, *(choice.warning for choice in answer.choices)) if w is not None]
        body = (
            chunks.chat_body(answer, charge, call.body, warnings)
            if isinstance(call.body, ChatCompletionRequest)
            else chunks.completion_body(answer, charge, warnings)
        )
        missed = CacheStatus.MISS in (lookup.status, similar.status)
        generated = Generated(
            body,
            charge,
            CacheStatus.MISS if missed else CacheStatus.BYPASS,
            answer.origin.served_by,
            warnings=tuple(dict.fromkeys(w.code for w in warnings)),
        )
        if way.primary and not warnings:  # an answer a policy acted on is not replayed to later requests
            if self.semantic_cache is not None:
                await self.semantic_cache.store(similar, body)
            await self._store(lookup, body)
        return generated

    async def stream(self, call: Call, principal: Principal) -> Streamed:
        """The stream, opened: refusals and failures up to its first event are errors with their own status
        (or fall back to the next model); streams are never cached."""
        charge = Charge(self.meter, principal, call.endpoint)
        warning = await self._screened(call, charge)
        with charge.settling(only_failure=True):
            opened = await self.chain(call.body.model).stream(call, charge)
        prefix = PREFIX_CHAT_COMPLETION if call.chat else PREFIX_COMPLETION
        if (policy := self._checks_output(call, principal)) is not None:  # inside the settlement: it marks why
            opened.events = self.guard.watched(opened.events, call, policy, charge)
        streamed = Streamed(call, charge, opened, new_id(prefix), warning)
        body = call.body
        if isinstance(body, ChatCompletionRequest) and body.store:
            streamed.events = self.stored.recorded(
                streamed.events, principal, body, charge, completion_id=streamed.completion_id, model=streamed.model
            )
        return streamed

    async def run(
        self,
        endpoint: str,
        raw: dict[str, Any],
        principal: Principal,
        *,
        priority: Priority,
        on_delta: OnDelta | None = None,
        on_admit: OnAdmit | None = None,
    ) -> Generated:
        """A stored request body (job, batch line) for ``endpoint``, validated, then run without streaming, with
        the background time limit (``jobs.timeout_s``) instead of the interactive one."""
        if endpoint in (ENDPOINT_CHAT, ENDPOINT_COMPLETIONS):
            schema = ChatCompletionRequest if endpoint == ENDPOINT_CHAT else CompletionRequest
            body = _validated(schema, {**raw, "stream": False})
            call = Call(body, endpoint, priority, self.background_timeout_s, on_delta)
            return await self.complete(call, principal, on_admit=on_admit)
        if endpoint == ENDPOINT_EMBEDDINGS:
            embedding = _validated(EmbeddingRequest, raw)
            return await self.embed(embedding, principal, priority=priority, on_admit=on_admit)
        raise InvalidRequest(f"Unsupported endpoint '{endpoint}'.", param="endpoint")

    async def predict(self, model: str, body: PredictRequest, principal: Principal) -> Generated:
        """``input`` as the one user message of a chat, metered as a prediction; never cached."""
        sampling = body.model_dump(exclude={"input"}, exclude_unset=True)
        chat = ChatCompletionRequest(model=model, messages=[ChatMessage(role="user", content=body.input)], **sampling)
        generated = await self.complete(Call(chat, ENDPOINT_PREDICT), principal, cache=CacheMode.SKIP, semantic=False)
        assert isinstance(generated.body, ChatCompletion)
        return replace(generated, body=chunks.prediction_body(generated.body))

    # -- embeddings ------------------------------------------------------------------------------------------
    async def embed(
        self,
        body: EmbeddingRequest,
        principal: Principal,
        *,
        priority: Priority = Priority.INTERACTIVE,
        cache: CacheMode = CacheMode.USE,
        on_admit: OnAdmit | None = None,
    ) -> Generated:
        charge = Charge(self.meter, principal, ENDPOINT_EMBEDDINGS, on_admit)
        way = self.chain(body.model)
        lookup = await self._lookup(principal, ENDPOINT_EMBEDDINGS, way.served, body, cache)
        if lookup.stored is not None:
            return await self._replay(EmbeddingList, lookup.stored, charge, way.served, None)
        with charge.settling():
            vectors = await way.embed(body, charge, priority)
        listing = chunks.embedding_list(vectors, body.encoding_format, charge)
        if way.primary:
            await self._store(lookup, listing)
        return Generated(listing, charge, lookup.status, vectors.origin.served_by)

    # -- moderation ------------------------------------------------------------------------------------------
    async def moderate(self, body: ModerationRequest, principal: Principal) -> Generated:
        """``/v1/moderations``: each input's scores, flagged at the caller's policy's thresholds (or 0.5)."""
        texts = moderation_texts(body)
        name = body.model or DEFAULT_MODERATION_MODEL
        if name in OPENAI_MODERATION_MODELS and self.registry.engine_of(name) is None:
            name = DEFAULT_MODERATION_MODEL
        charge = Charge(self.meter, principal, ENDPOINT_MODERATIONS)
        with charge.settling():
            moderated = await self.chain(name).moderate(texts, charge, Priority.INTERACTIVE)
        metrics.texts_moderated(moderated.origin.snapshot, len(texts))
        policy = principal.content_policy
        thresholds = {} if policy is None else dict(policy.categories)
        return Generated(chunks.moderation_body(moderated, thresholds), charge, served_by=moderated.origin.served_by)

    # -- the cache -------------------------------------------------------------------------------------------
    async def _lookup(
        self, principal: Principal, endpoint: str, served: ServedModel, body: BaseModel, mode: CacheMode
    ) -> CacheLookup:
        if self.cache is None:
            return BYPASS
        lookup = await self.cache.lookup(principal.project_id, endpoint, served.snapshot, body, mode)
        metrics.cache_lookup("exact", lookup.status)
        return lookup

    async def _store(self, lookup: CacheLookup, body: BaseModel) -> None:
        if self.cache is not None:
            await self.cache.store(lookup, body)

    async def _replay(
        self,
        model: type[ChatCompletion] | type[Completion] | type[EmbeddingList],
        stored: dict[str, Any],
        charge: Charge,
        served: ServedModel,
        on_delta: OnDelta | None,
    ) -> Generated:
        """A cached body under a new id: recorded with its tokens (all of them cached), cost 0."""
        usage = stored["usage"]
        prompt_tokens = usage["prompt_tokens"]
        cached = TokenUsage(prompt_tokens, usage.get("completion_tokens", 0), prompt_tokens)
        await charge.admit_free(model=served.snapshot, pricing=served.settings.pricing, usage=cached)
        replay = chunks.replayed(model, stored)
        if on_delta is not None:  # a job's events show the answer as they would show a generated one
            for index, text in chunks.choice_texts(replay):
                on_delta(index, text)
        return Generated(replay, charge, CacheStatus.HIT)
