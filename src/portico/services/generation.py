"""One request body in, the body the sync endpoint answers out: for routes, jobs, batches and conversations.

Each call admits the request against the principal's limits, runs it at the given priority, settles its usage
however it ends, and returns the same response model the sync endpoint sends (with ``usage.cost``). A
deterministic request may be answered from the response cache (``services/cache.py``): no engine work, one
request against the rate limits, a usage record with cost 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from portico.auth.principal import Principal
from portico.constants import PREFIX_CHAT_COMPLETION, PREFIX_COMPLETION, CacheMode, CacheStatus, Priority, new_id
from portico.engines.registry import ModelRegistry, ServedModel
from portico.engines.upstream import UpstreamEngine
from portico.errors import InvalidRequest
from portico.observability import metrics
from portico.schemas.chat import AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionRequest
from portico.schemas.common import PromptTokensDetails, Usage
from portico.schemas.completions import Completion, CompletionChoice, CompletionRequest
from portico.schemas.embeddings import EmbeddingList, EmbeddingRequest
from portico.services import inference
from portico.services.cache import BYPASS, CacheLookup, ResponseCache
from portico.services.embeddings import EmbeddingService, embedding_list
from portico.services.inference import InferenceService, PreparedGeneration
from portico.services.metering import Meter, Ticket
from portico.services.routing import Route, route
from portico.services.semantic_cache import SEMANTIC_BYPASS, SemanticCache

if TYPE_CHECKING:  # services/upstream.py builds on this module
    from portico.services.upstream import UpstreamService

ENDPOINT_CHAT = "/v1/chat/completions"
ENDPOINT_COMPLETIONS = "/v1/completions"
ENDPOINT_EMBEDDINGS = "/v1/embeddings"
# Called with (choice index, text) as a generation makes text: job events and partial output.
OnDelta = Callable[[int, str], None]
# Called with the request's ticket once it is admitted: its settlement is the usage however the run ends.
OnAdmit = Callable[[Ticket], None]


@dataclass(frozen=True, slots=True)
class Generated:
    body: BaseModel  # ChatCompletion | Completion | EmbeddingList
    ticket: Ticket
    cache: CacheStatus = CacheStatus.BYPASS
    served_by: str | None = None  # the deployment that answered (None: the cache)
    similarity: float | None = None  # a semantic cache hit's similarity (X-Cache-Similarity)


def wire_usage(usage: inference.Usage, ticket: Ticket) -> Usage:
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
        cost=ticket.cost_of(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
        ),
    )


def _validated(model: type[BaseModel], raw: dict[str, Any]) -> Any:
    """A request body from storage (a job, a batch line) checked as the endpoint would check it."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidRequest(f"Invalid request body: {where}: {first.get('msg')}.", param=where or None) from None


def _text_response(
    chat: bool, result: inference.GenerationResult, snapshot: str, ticket: Ticket
) -> ChatCompletion | Completion:
    """The sync endpoint's body for a finished generation."""
    created, usage = int(time.time()), wire_usage(result.usage, ticket)
    if chat:
        return ChatCompletion(
            id=new_id(PREFIX_CHAT_COMPLETION),
            created=created,
            model=snapshot,
            choices=[
                ChatChoice(index=i, message=AssistantMessage(content=c.text), finish_reason=c.finish_reason.value)
                for i, c in enumerate(result.choices)
            ],
            usage=usage,
        )
    return Completion(
        id=new_id(PREFIX_COMPLETION),
        created=created,
        model=snapshot,
        choices=[
            CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason.value)
            for i, c in enumerate(result.choices)
        ],
        usage=usage,
    )


def _choice_texts(body: ChatCompletion | Completion) -> list[tuple[int, str]]:
    if isinstance(body, ChatCompletion):
        return [(choice.index, choice.message.content) for choice in body.choices]
    return [(choice.index, choice.text) for choice in body.choices]


class GenerationService:
    def __init__(
        self,
        registry: ModelRegistry,
        inference_service: InferenceService,
        embeddings: EmbeddingService,
        upstream: UpstreamService,
        meter: Meter,
        *,
        background_timeout_s: float | None = None,
        cache: ResponseCache | None = None,
        semantic_cache: SemanticCache | None = None,
    ) -> None:
        self.registry = registry
        self.inference = inference_service
        self.embeddings = embeddings
        # Models served by an upstream server (docs/gateway.md) go there instead of through the local engines.
        self.upstream = upstream
        self.meter = meter
        self.background_timeout_s = background_timeout_s
        self.cache = cache
        self.semantic_cache = semantic_cache

    async def admit(self, principal: Principal, prepared: PreparedGeneration, endpoint: str) -> Ticket:
        return await self.meter.admit(
            principal,
            endpoint=endpoint,
            model=prepared.served.snapshot,
            pricing=prepared.served.settings.pricing,
            prompt_tokens=prepared.prompt_tokens,
            max_completion_tokens=prepared.max_completion_tokens,
        )

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
        if endpoint == ENDPOINT_CHAT:
            chat = _validated(ChatCompletionRequest, {**raw, "stream": False})
            return await self.chat(
                chat,
                principal,
                priority=priority,
                on_delta=on_delta,
                on_admit=on_admit,
                timeout_s=self.background_timeout_s,
            )
        if endpoint == ENDPOINT_COMPLETIONS:
            body = _validated(CompletionRequest, {**raw, "stream": False})
            return await self.completion(
                body,
                principal,
                priority=priority,
                on_delta=on_delta,
                on_admit=on_admit,
                timeout_s=self.background_timeout_s,
            )
        if endpoint == ENDPOINT_EMBEDDINGS:
            embedding = _validated(EmbeddingRequest, raw)
            return await self.embedding(embedding, principal, priority=priority, on_admit=on_admit)
        raise InvalidRequest(f"Unsupported endpoint '{endpoint}'.", param="endpoint")

    async def chat(
        self,
        body: ChatCompletionRequest,
        principal: Principal,
        *,
        priority: Priority = Priority.INTERACTIVE,
        on_delta: OnDelta | None = None,
        on_admit: OnAdmit | None = None,
        timeout_s: float | None = None,
        cache: CacheMode = CacheMode.USE,
        semantic: bool | None = None,
    ) -> Generated:
        """``semantic``: the request's ``X-Semantic-Cache`` (None: the model's setting decides)."""
        return await self._text(body, principal, priority, on_delta, on_admit, timeout_s, cache, semantic)

    async def completion(
        self,
        body: CompletionRequest,
        principal: Principal,
        *,
        priority: Priority = Priority.INTERACTIVE,
        on_delta: OnDelta | None = None,
        on_admit: OnAdmit | None = None,
        timeout_s: float | None = None,
        cache: CacheMode = CacheMode.USE,
        semantic: bool | None = None,
    ) -> Generated:
        """``semantic``: the request's ``X-Semantic-Cache`` (None: the model's setting decides)."""
        return await self._text(body, principal, priority, on_delta, on_admit, timeout_s, cache, semantic)

    def route(self, name: str) -> Route:
        """The model ``name`` names, then its fallbacks: where a request may be answered (docs/gateway.md)."""
        return route(self.registry, name)

    async def _text(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        principal: Principal,
        priority: Priority,
        on_delta: OnDelta | None,
        on_admit: OnAdmit | None,
        timeout_s: float | None,
        cache: CacheMode,
        semantic: bool | None,
    ) -> Generated:
        """Chat or completion: from the exact or the semantic cache, else from the named model or a fallback,
        upstream or local. Only the named model's answers are cached."""
        chat = isinstance(body, ChatCompletionRequest)
        endpoint, response, prefix = (
            (ENDPOINT_CHAT, ChatCompletion, PREFIX_CHAT_COMPLETION)
            if chat
            else (ENDPOINT_COMPLETIONS, Completion, PREFIX_COMPLETION)
        )
        way = self.route(body.model)
        lookup = await self._lookup(principal, endpoint, way.served, body, cache)
        if lookup.stored is not None:
            return await self._replay_generation(
                response, lookup.stored, prefix, principal, way.served, on_admit, on_delta
            )
        similar = SEMANTIC_BYPASS
        if self.semantic_cache is not None:
            similar = await self.semantic_cache.lookup(
                principal.project_id,
                endpoint,
                way.served.snapshot,
                body,
                cache,
                requested=semantic,
                model_opt_in=way.served.settings.semantic_cache,
            )
            metrics.cache_lookup("semantic", similar.status)
        if similar.stored is not None:
            replayed = await self._replay_generation(
                response, similar.stored, prefix, principal, way.served, on_admit, on_delta
            )
            return replace(replayed, similarity=similar.similarity)

        async def attempt(way: Route) -> Generated:
            served = way.served
            if isinstance(served.engine, UpstreamEngine):
                if isinstance(body, ChatCompletionRequest):
                    return await self.upstream.chat(way, body, principal, on_admit=on_admit, on_delta=on_delta)
                return await self.upstream.completion(way, body, principal, on_admit=on_admit, on_delta=on_delta)
            if isinstance(body, ChatCompletionRequest):
                prepared = await self.inference.prepare_chat(body, served)
            else:
                prepared = await self.inference.prepare_completion(body, served)
            ticket = await way.ticket_for(lambda: self.admit(principal, prepared, endpoint), on_admit)
            result = await self.inference.complete(
                prepared, ticket, priority=priority, on_delta=on_delta, timeout_s=timeout_s
            )
            return Generated(_text_response(chat, result, served.snapshot, ticket), ticket, served_by=served.alias)

        generated = await way.run(attempt)
        missed = CacheStatus.MISS in (lookup.status, similar.status)
        generated = replace(generated, cache=CacheStatus.MISS if missed else CacheStatus.BYPASS)
        if self.semantic_cache is not None and way.primary:
            await self.semantic_cache.store(similar, generated.body)
        return await self._stored(lookup if way.primary else BYPASS, generated)

    async def embedding(
        self,
        body: EmbeddingRequest,
        principal: Principal,
        *,
        priority: Priority = Priority.INTERACTIVE,
        on_admit: OnAdmit | None = None,
        cache: CacheMode = CacheMode.USE,
    ) -> Generated:
        way = self.route(body.model)
        lookup = await self._lookup(principal, ENDPOINT_EMBEDDINGS, way.served, body, cache)
        if lookup.stored is not None:
            return await self._replay_embedding(lookup.stored, principal, way.served, on_admit)

        async def attempt(way: Route) -> Generated:
            served = way.served
            if isinstance(served.engine, UpstreamEngine):
                return await self.upstream.embedding(way, body, principal, on_admit=on_admit)
            prepared = await self.embeddings.prepare(body, served)
            ticket = await way.ticket_for(
                lambda: self.meter.admit(
                    principal,
                    endpoint=ENDPOINT_EMBEDDINGS,
                    model=served.snapshot,
                    pricing=served.settings.pricing,
                    prompt_tokens=prepared.prompt_tokens,
                    max_completion_tokens=0,
                ),
                on_admit,
            )
            vectors = await self.embeddings.embed(prepared, ticket, priority=priority)
            listing = embedding_list(prepared, vectors, body.encoding_format, ticket)
            return Generated(listing, ticket, served_by=served.alias)

        generated = await way.run(attempt)
        return await self._stored(lookup if way.primary else BYPASS, replace(generated, cache=lookup.status))

    async def _replay_embedding(
        self, stored: dict[str, Any], principal: Principal, served: ServedModel, on_admit: OnAdmit | None
    ) -> Generated:
        ticket = await self._free_ticket(principal, ENDPOINT_EMBEDDINGS, served, stored, on_admit)
        replayed = EmbeddingList.model_validate({**stored, "usage": {**stored["usage"], "cost": 0.0}})
        return Generated(replayed, ticket, CacheStatus.HIT)

    async def _lookup(
        self, principal: Principal, endpoint: str, served: ServedModel, body: BaseModel, mode: CacheMode
    ) -> CacheLookup:
        if self.cache is None:
            return BYPASS
        lookup = await self.cache.lookup(principal.project_id, endpoint, served.snapshot, body, mode)
        metrics.cache_lookup("exact", lookup.status)
        return lookup

    async def _stored(self, lookup: CacheLookup, generated: Generated) -> Generated:
        if self.cache is not None:
            await self.cache.store(lookup, generated.body)
        return generated

    async def _free_ticket(
        self, principal: Principal, endpoint: str, served: ServedModel, stored: dict[str, Any], on_admit: OnAdmit | None
    ) -> Ticket:
        """A cache hit's ticket, settled at once: the cached usage recorded with cost 0, all of it cached."""
        ticket = await self.meter.admit_free(
            principal, endpoint=endpoint, model=served.snapshot, pricing=served.settings.pricing
        )
        if on_admit is not None:
            on_admit(ticket)
        usage = stored["usage"]
        prompt_tokens = usage["prompt_tokens"]
        completion_tokens = usage.get("completion_tokens", 0)
        ticket.settle(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=prompt_tokens, status=200
        )
        return ticket

    async def _replay_generation(
        self,
        model: type[ChatCompletion] | type[Completion],
        stored: dict[str, Any],
        id_prefix: str,
        principal: Principal,
        served: ServedModel,
        on_admit: OnAdmit | None,
        on_delta: OnDelta | None,
    ) -> Generated:
        """A cached chat completion or completion under a new id: usage cost 0, its prompt tokens all cached."""
        endpoint = ENDPOINT_CHAT if model is ChatCompletion else ENDPOINT_COMPLETIONS
        ticket = await self._free_ticket(principal, endpoint, served, stored, on_admit)
        usage = stored["usage"]
        replay = model.model_validate(
            {
                **stored,
                "id": new_id(id_prefix),
                "created": int(time.time()),
                "usage": {**usage, "prompt_tokens_details": {"cached_tokens": usage["prompt_tokens"]}, "cost": 0.0},
            }
        )
        if on_delta is not None:  # a job's events show the answer as they would show a generated one
            for index, text in _choice_texts(replay):
                on_delta(index, text)
        return Generated(replay, ticket, CacheStatus.HIT)
