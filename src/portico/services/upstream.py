"""Requests for models served by an upstream OpenAI-compatible server: pass-through behind Portico's limits.

The request body, as Portico's schemas validated it, is sent re-serialized (unset fields left out) with ``model``
replaced by the upstream's name for it; the answer comes back with ``model`` rewritten to Portico's snapshot and
``usage`` (with ``cost`` from the model's pricing) taken from the upstream. There is no local tokenizer, so the
limits reserve an estimate before the call — ``ceil(characters of the JSON-encoded messages / prompt / input
÷ 3)`` prompt tokens plus ``max_tokens`` (default: the model's context window) per choice — and settle with the
upstream's actual usage. Streams ask the upstream for ``stream_options.include_usage`` so that usage is exact.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from portico.auth.principal import Principal
from portico.constants import PREFIX_CHAT_COMPLETION, PREFIX_COMPLETION, Capability, new_id
from portico.engines.registry import ServedModel
from portico.engines.upstream import UPSTREAM_FAILURES, Dispatch, UpstreamDeployment, UpstreamEngine
from portico.errors import CircuitOpen, PorticoError, UnsupportedParameter, UpstreamError
from portico.schemas.chat import ChatCompletion, ChatCompletionRequest
from portico.schemas.completions import Completion, CompletionRequest
from portico.schemas.embeddings import EmbeddingList, EmbeddingRequest
from portico.services import inference
from portico.services.generation import (
    ENDPOINT_CHAT,
    ENDPOINT_COMPLETIONS,
    ENDPOINT_EMBEDDINGS,
    Generated,
    OnAdmit,
    OnDelta,
    wire_usage,
)
from portico.services.metering import Meter, Ticket, UsageCounts, settled_on_exit
from portico.services.routing import Route
from portico.settings import RoutingSettings

_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")
logger = logging.getLogger("portico.gateway")

CHARS_PER_TOKEN = 3  # the estimate's ratio: generous for English with BPE tokenizers (about 4 characters a token)
# Fields Portico keeps for itself rather than sending upstream (`store` would store the answer upstream too).
_LOCAL_FIELDS = ("store", "metadata", "stream", "stream_options")


@dataclass(frozen=True, slots=True)
class _Route:
    endpoint: str
    path: str  # relative to the upstream's base_url
    capability: Capability
    input_field: str  # what the prompt estimate counts


_CHAT = _Route(ENDPOINT_CHAT, "chat/completions", Capability.CHAT, "messages")
_COMPLETIONS = _Route(ENDPOINT_COMPLETIONS, "completions", Capability.COMPLETIONS, "prompt")
_EMBEDDINGS = _Route(ENDPOINT_EMBEDDINGS, "embeddings", Capability.EMBEDDINGS, "input")


def _tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _usage(raw: Any) -> inference.Usage | None:
    """The upstream's ``usage`` object, or None if it sent none (or something else)."""
    if not isinstance(raw, dict):
        return None
    try:
        prompt = int(raw.get("prompt_tokens") or 0)
        completion = int(raw.get("completion_tokens") or 0)
        details = raw.get("prompt_tokens_details")
        cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    except (TypeError, ValueError):
        return None
    return inference.Usage(prompt, completion, cached)


def _counts(usage: inference.Usage) -> UsageCounts:
    return UsageCounts(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)


def _choice_text(choice: Any) -> str:
    """A choice's text in a chat answer, a completion answer, or either kind of stream chunk."""
    if not isinstance(choice, dict):
        return ""
    part = choice.get("message") or choice.get("delta")
    text = part.get("content") if isinstance(part, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    """One request on its way upstream: the payload and what the limits reserve for it."""

    served: ServedModel
    engine: UpstreamEngine
    route: _Route
    payload: dict[str, Any]
    prompt_estimate: int
    max_completion_tokens: int


@dataclass(slots=True)
class UpstreamStream:
    """An upstream stream whose status was a success: the chunks to send, and its ticket.

    ``on_close`` is for the SSE response: it settles and closes the upstream if the body never ran.
    """

    ticket: Ticket
    chunks: AsyncIterator[dict[str, Any]]
    response: httpx.Response
    meter: Meter
    served_by: str  # the deployment's name
    dispatch: Dispatch

    def on_close(self) -> None:
        if not self.ticket.stream_started:
            self.ticket.settle_unstarted()
            self.dispatch.end(None)
            self.meter.spawn(self.response.aclose())


def _backoff(routing: RoutingSettings, retry: int, error: PorticoError) -> float:
    """Full jitter over an exponential ceiling; at least an upstream's Retry-After, at most ``max_backoff_s``."""
    ceiling = min(routing.max_backoff_s, routing.backoff_s * 2**retry)
    return min(routing.max_backoff_s, max(random.uniform(0, ceiling), error.retry_after or 0.0))


async def _retrying(
    engine: UpstreamEngine, attempt: Callable[[UpstreamDeployment], Awaitable[_T]]
) -> tuple[_T, UpstreamDeployment]:
    """``attempt`` on the deployment the balancer picks; after a retryable upstream failure, again (on another
    deployment when one is available) after a backoff, up to ``routing.retries`` times. Only failures before
    the answer's first byte get here, so a retry never repeats output the client has seen."""
    routing = engine.routing
    tried: list[UpstreamDeployment] = []
    for retry in range(routing.retries + 1):
        deployment = engine.pick(tried)
        if deployment is None:
            wait = min(d.breaker.probe_in_s() for d in engine.deployments)
            raise CircuitOpen(
                f"Every upstream deployment of '{engine.alias}' is failing; the next is probed in {wait:.0f}s. "
                "Retry later.",
                retry_after=wait,
            )
        tried.append(deployment)
        try:
            return await attempt(deployment), deployment
        except UPSTREAM_FAILURES as exc:
            if retry == routing.retries:
                raise
            logger.info(
                "upstream deployment %s failed (%s); retry %d of %d",
                deployment.name,
                exc.code,
                retry + 1,
                routing.retries,
            )
            await asyncio.sleep(_backoff(routing, retry, exc))
    raise AssertionError("unreachable: the last attempt returns or raises")


@dataclass(slots=True)
class _Opened:
    """An upstream stream that answered 200 and sent its first event (None: it ended at once)."""

    deployment: UpstreamDeployment
    response: httpx.Response
    events: AsyncIterator[dict[str, Any]]
    first: dict[str, Any] | None
    dispatch: Dispatch

    async def payloads(self) -> AsyncIterator[dict[str, Any]]:
        if self.first is not None:
            yield self.first
        async for payload in self.events:
            yield payload


@contextmanager
def _ended_on_exit(dispatch: Dispatch) -> Iterator[None]:
    """End a stream's dispatch with how the stream ended (a mid-stream upstream failure counts against it)."""
    try:
        yield
    except BaseException as exc:
        dispatch.end(exc)
        raise
    dispatch.end(None)


class UpstreamService:
    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    # -- sync ------------------------------------------------------------------------------------------
    async def chat(
        self,
        route: Route,
        body: ChatCompletionRequest,
        principal: Principal,
        *,
        on_admit: OnAdmit | None = None,
        on_delta: OnDelta | None = None,
    ) -> Generated:
        served = route.served
        call = self._call(served, _CHAT, body, body.max_completion_tokens or body.max_tokens, body.n)
        answer, usage, ticket, served_by = await self._run(call, principal, route, on_admit)
        completion = self._validated(
            ChatCompletion, answer, served, PREFIX_CHAT_COMPLETION, wire_usage(usage, ticket).model_dump()
        )
        if on_delta is not None:
            for choice in completion.choices:
                on_delta(choice.index, choice.message.content)
        return Generated(completion, ticket, served_by=served_by)

    async def completion(
        self,
        route: Route,
        body: CompletionRequest,
        principal: Principal,
        *,
        on_admit: OnAdmit | None = None,
        on_delta: OnDelta | None = None,
    ) -> Generated:
        served = route.served
        call = self._call(served, _COMPLETIONS, body, body.max_tokens, body.n * len(body.prompts()))
        answer, usage, ticket, served_by = await self._run(call, principal, route, on_admit)
        completion = self._validated(
            Completion, answer, served, PREFIX_COMPLETION, wire_usage(usage, ticket).model_dump()
        )
        if on_delta is not None:
            for choice in completion.choices:
                on_delta(choice.index, choice.text)
        return Generated(completion, ticket, served_by=served_by)

    async def embedding(
        self, route: Route, body: EmbeddingRequest, principal: Principal, *, on_admit: OnAdmit | None = None
    ) -> Generated:
        served = route.served
        call = self._call(served, _EMBEDDINGS, body, 0, 0)
        answer, usage, ticket, served_by = await self._run(call, principal, route, on_admit)
        cost = ticket.cost_of(prompt_tokens=usage.prompt_tokens, completion_tokens=0, cached_tokens=0)
        wire = {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens, "cost": cost}
        return Generated(self._validated(EmbeddingList, answer, served, None, wire), ticket, served_by=served_by)

    # -- streams ---------------------------------------------------------------------------------------
    async def stream_chat(self, route: Route, body: ChatCompletionRequest, principal: Principal) -> UpstreamStream:
        call = self._call(route.served, _CHAT, body, body.max_completion_tokens or body.max_tokens, body.n)
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return await self._stream(call, principal, route, PREFIX_CHAT_COMPLETION, include_usage)

    async def stream_completion(self, route: Route, body: CompletionRequest, principal: Principal) -> UpstreamStream:
        call = self._call(route.served, _COMPLETIONS, body, body.max_tokens, body.n * len(body.prompts()))
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return await self._stream(call, principal, route, PREFIX_COMPLETION, include_usage)

    # -- the parts -------------------------------------------------------------------------------------
    def _call(
        self, served: ServedModel, route: _Route, body: BaseModel, max_tokens: int | None, choices: int
    ) -> UpstreamCall:
        engine = served.engine
        if not isinstance(engine, UpstreamEngine):  # find() only answers upstream models
            raise UpstreamError(f"The model '{served.alias}' is not served by an upstream.")
        if route.capability not in engine.capabilities:
            offered = ", ".join(sorted(engine.capabilities))
            raise UnsupportedParameter(
                f"The model '{served.alias}' does not support {route.capability.value} (it supports: {offered}). "
                "GET /v1/models lists each model's capabilities.",
                param="model",
            )
        payload = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
        for name in _LOCAL_FIELDS:
            payload.pop(name, None)
        estimate = _tokens(len(json.dumps(payload.get(route.input_field, ""), ensure_ascii=False)))
        completion = (max_tokens or max(1, engine.context_window - estimate)) * choices
        return UpstreamCall(served, engine, route, payload, estimate, completion)

    async def _admit(self, call: UpstreamCall, principal: Principal) -> Ticket:
        return await self.meter.admit(
            principal,
            endpoint=call.route.endpoint,
            model=call.served.snapshot,
            pricing=call.served.settings.pricing,
            prompt_tokens=call.prompt_estimate,
            max_completion_tokens=call.max_completion_tokens,
        )

    async def _run(
        self, call: UpstreamCall, principal: Principal, route: Route, on_admit: OnAdmit | None
    ) -> tuple[dict[str, Any], inference.Usage, Ticket, str]:
        """Admit, call the upstream, settle with its usage (0 if it failed or the client left first); the answer,
        its usage, the ticket and the deployment that answered."""
        ticket = await route.ticket_for(lambda: self._admit(call, principal), on_admit)
        used = UsageCounts(0)
        with settled_on_exit(ticket, lambda: used):
            answer, deployment = await self._post(call)
            usage = _usage(answer.get("usage"))
            if usage is None:  # an upstream that reports no usage: the estimate, and the answer's characters
                chars = sum(len(_choice_text(choice)) for choice in answer.get("choices") or [])
                usage = inference.Usage(call.prompt_estimate, _tokens(chars) if call.route.path != "embeddings" else 0)
            used = _counts(usage)
        return answer, usage, ticket, deployment.name

    async def _post(self, call: UpstreamCall) -> tuple[dict[str, Any], UpstreamDeployment]:
        async def attempt(deployment: UpstreamDeployment) -> dict[str, Any]:
            dispatch = deployment.dispatch()
            try:
                body = {**call.payload, "model": deployment.model_name}
                answer = await deployment.post(call.route.path, body, slot=dispatch.slot)
            except BaseException as exc:
                dispatch.end(exc)
                raise
            dispatch.end(None)
            return answer

        return await _retrying(call.engine, attempt)

    def _validated(
        self,
        model: type[_M],
        answer: dict[str, Any],
        served: ServedModel,
        id_prefix: str | None,
        usage: dict[str, Any],
    ) -> _M:
        body = {**answer, "model": served.snapshot, "usage": usage}
        if id_prefix is not None:
            body.update(id=new_id(id_prefix), created=int(time.time()))
        try:
            return model.model_validate(body)
        except ValidationError:
            raise UpstreamError(
                f"The upstream serving '{served.alias}' answered in a shape Portico does not pass on."
            ) from None

    async def _stream(
        self, call: UpstreamCall, principal: Principal, route: Route, id_prefix: str, include_usage: bool
    ) -> UpstreamStream:
        """Admit, open the upstream stream and read its first event, so that failures up to then answer with their
        own status (or are retried, or fall back) instead of breaking a stream the client has started reading."""
        ticket = await route.ticket_for(lambda: self._admit(call, principal))
        payload = {**call.payload, "stream": True, "stream_options": {"include_usage": True}}

        async def attempt(deployment: UpstreamDeployment) -> _Opened:
            dispatch = deployment.dispatch()
            try:
                body = {**payload, "model": deployment.model_name}
                response = await deployment.open_stream(call.route.path, body, slot=dispatch.slot)
                events = deployment.events(response)
                first = await anext(events, None)
            except BaseException as exc:
                dispatch.end(exc)
                raise
            return _Opened(deployment, response, events, first, dispatch)

        try:
            opened, _ = await _retrying(call.engine, attempt)
        except PorticoError as exc:
            if not ticket.defers(exc):
                ticket.settle(prompt_tokens=0, completion_tokens=0, cached_tokens=0, status=exc.status_code)
            raise
        except BaseException:
            ticket.settle(prompt_tokens=0, completion_tokens=0, cached_tokens=0, status=499, cancelled=True)
            raise
        chunks = self._chunks(call, opened, ticket, new_id(id_prefix), include_usage)
        return UpstreamStream(ticket, chunks, opened.response, self.meter, opened.deployment.name, opened.dispatch)

    async def _chunks(
        self, call: UpstreamCall, opened: _Opened, ticket: Ticket, chunk_id: str, include_usage: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """The upstream's chunks with Portico's id and snapshot; its usage chunk (with cost) if the client asked.

        Settled with the upstream's usage; without one (the client left first, or the upstream sent none): the
        prompt estimate and the streamed characters.
        """
        ticket.stream_started = True
        snapshot = call.served.snapshot
        usage: inference.Usage | None = None
        chars = 0

        def used() -> UsageCounts:
            if usage is not None:
                return _counts(usage)
            return UsageCounts(call.prompt_estimate, _tokens(chars))

        def rewrite(chunk: dict[str, Any]) -> dict[str, Any]:
            return {**chunk, "id": chunk_id, "model": snapshot}

        with settled_on_exit(ticket, used), _ended_on_exit(opened.dispatch):
            async for chunk in opened.payloads():
                usage = _usage(chunk.get("usage")) or usage
                choices = chunk.get("choices") or []
                if choices:
                    ticket.note_first_token()
                    chars += sum(len(_choice_text(choice)) for choice in choices)
                    yield rewrite({key: value for key, value in chunk.items() if key != "usage"})
                elif usage is not None and include_usage:
                    extras: dict[str, Any] = {"usage": wire_usage(usage, ticket).model_dump()}
                    if (warning := ticket.quota_warning) is not None:
                        extras["quota_warning"] = warning
                    yield rewrite({**chunk, **extras})
