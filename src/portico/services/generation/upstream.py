"""Models served by an upstream OpenAI-compatible server, as a backend: pass-through behind Portico's limits.

The request body, as Portico's schemas validated it, is sent re-serialized (unset fields left out) with ``model``
replaced by the upstream's name for it; the answer is read into the pipeline's own answer and events, so it
leaves Portico in the same wire shapes as a local model's, under Portico's snapshot and with the upstream's
usage (tool calls and logprobs included, relayed as they came). There is no local tokenizer, so the limits
reserve an estimate before the call — ``ceil(characters of the JSON-encoded messages and tools / prompt /
input ÷ 3)`` prompt tokens plus ``max_tokens`` (default: the model's
context window) per choice — and settle with the upstream's actual usage. Streams ask the upstream for
``stream_options.include_usage`` so that usage is exact.

Each call goes to the deployment the balancer picks; after a retryable failure before the answer's first byte,
again (on another deployment when one is available) after a jittered backoff, up to ``routing.retries`` times.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from portico.constants import Capability, Priority
from portico.engines.registry import ServedModel
from portico.engines.upstream import UPSTREAM_FAILURES, Dispatch, UpstreamDeployment, UpstreamEngine
from portico.errors import CircuitOpen, PorticoError, UnsupportedParameter
from portico.schemas.chat import ChatCompletionRequest
from portico.schemas.embeddings import EmbeddingRequest
from portico.services.generation.types import (
    ENDPOINT_CHAT,
    Answer,
    Call,
    Choice,
    ChoiceEnd,
    Event,
    Moderated,
    Opened,
    Origin,
    TextDelta,
    TextRequest,
    UsageReport,
    Vectors,
)
from portico.services.generation.upstream_answers import (
    call_deltas,
    choice_text,
    choices_of,
    estimated_tokens,
    finish_reason_of,
    logprobs_of,
    malformed,
    tool_calls_of,
    usage_of,
)
from portico.settings import RoutingSettings
from portico.usage.meter import Charge
from portico.usage.tokens import TokenUsage

_T = TypeVar("_T")
logger = logging.getLogger("portico.gateway")

# Fields Portico keeps for itself rather than sending upstream (`store` would store the answer upstream too).
_LOCAL_FIELDS = ("store", "metadata", "stream", "stream_options")


def _backoff(routing: RoutingSettings, retry: int, error: PorticoError) -> float:
    """Full jitter over an exponential ceiling; at least an upstream's Retry-After, at most ``max_backoff_s``."""
    ceiling = min(routing.max_backoff_s, routing.backoff_s * 2**retry)
    return min(routing.max_backoff_s, max(random.uniform(0, ceiling), error.retry_after or 0.0))


@dataclass(frozen=True, slots=True)
class _Request:
    """One request on its way upstream: where it goes, the payload, and what the limits reserve for it."""

    path: str  # relative to the upstream's base_url
    payload: dict[str, Any]
    prompt_estimate: int
    max_completion_tokens: int


class UpstreamBackend:
    def __init__(self, served: ServedModel, engine: UpstreamEngine) -> None:
        self.served = served
        self.engine = engine

    # -- the backend ---------------------------------------------------------------------------------------
    async def complete(self, call: Call, charge: Charge) -> Answer:
        request = self._text_request(call)
        await self._admit(request, charge)
        answer, deployment = await self._retrying(lambda d: self._post(d, request))
        choices = [
            Choice(
                choice_text(c), finish_reason_of(self.served, c.get("finish_reason")), tool_calls_of(c), logprobs_of(c)
            )
            for c in sorted(choices_of(self.served, answer.get("choices")), key=lambda c: int(c.get("index", 0)))
        ]
        usage = usage_of(answer.get("usage"))
        if usage is None:  # an upstream that reports no usage: the estimate, and the answer's characters
            usage = TokenUsage(request.prompt_estimate, estimated_tokens(sum(len(c.text) for c in choices)))
        charge.count(usage)
        if call.on_delta is not None:
            for index, choice in enumerate(choices):
                call.on_delta(index, choice.text)
        return Answer(choices, usage, Origin(self.served.snapshot, deployment.name))

    async def stream(self, call: Call, charge: Charge) -> Opened:
        """Admitted, the upstream stream opened and its first event read, so that failures up to then answer
        with their own status (or are retried, or fall back) instead of breaking a stream the client reads."""
        request = self._text_request(call)
        await self._admit(request, charge)
        payload = {**request.payload, "stream": True, "stream_options": {"include_usage": True}}

        async def attempt(deployment: UpstreamDeployment) -> _OpenStream:
            dispatch = deployment.dispatch()
            try:
                body = {**payload, "model": deployment.model_name}
                response = await deployment.open_stream(request.path, body, slot=dispatch.slot)
                events = deployment.events(response)
                first = await anext(events, None)
            except BaseException as exc:
                dispatch.end(exc)
                raise
            return _OpenStream(dispatch, response.aclose, events, first)

        opened, deployment = await self._retrying(attempt)
        return Opened(
            self._events(opened, request, charge),
            Origin(self.served.snapshot, deployment.name),
            abandon=lambda: opened.abandon(charge),
        )

    async def embed(self, body: EmbeddingRequest, charge: Charge, priority: Priority) -> Vectors:
        request = self._request(Capability.EMBEDDINGS, "embeddings", body.model_dump(mode="json", exclude_unset=True))
        request = _with_estimate(request, ("input",), 0, 0, self.engine.context_window)
        await self._admit(request, charge)
        answer, deployment = await self._retrying(lambda d: self._post(d, request))
        data = answer.get("data")
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise malformed(self.served)
        try:
            vectors = [[float(x) for x in item["embedding"]] for item in sorted(data, key=lambda i: i["index"])]
        except (KeyError, TypeError, ValueError):
            raise malformed(self.served) from None
        usage = usage_of(answer.get("usage")) or TokenUsage(request.prompt_estimate)
        charge.count(TokenUsage(usage.prompt_tokens))
        return Vectors(vectors, usage.prompt_tokens, Origin(self.served.snapshot, deployment.name))

    async def moderate(self, texts: list[str], charge: Charge | None, priority: Priority) -> Moderated:
        request = self._request(Capability.MODERATION, "moderations", {"input": texts})
        request = _with_estimate(request, ("input",), 0, 0, self.engine.context_window)
        if charge is not None:
            await self._admit(request, charge)
        answer, deployment = await self._retrying(lambda d: self._post(d, request))
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(texts):
            raise malformed(self.served)
        try:
            scores = [{str(name): float(score) for name, score in r["category_scores"].items()} for r in results]
        except (AttributeError, KeyError, TypeError, ValueError):
            raise malformed(self.served) from None
        if charge is not None:
            charge.count(TokenUsage(request.prompt_estimate))
        return Moderated(scores, request.prompt_estimate, Origin(self.served.snapshot, deployment.name))

    async def check(self, body: TextRequest | EmbeddingRequest) -> None:
        if isinstance(body, EmbeddingRequest):
            self._request(Capability.EMBEDDINGS, "embeddings", {})
        else:
            self._text_request(Call(body, ENDPOINT_CHAT))

    # -- the parts -----------------------------------------------------------------------------------------
    def _text_request(self, call: Call) -> _Request:
        body = call.body
        payload = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
        if isinstance(body, ChatCompletionRequest):
            request = self._request(Capability.CHAT, "chat/completions", payload)
            return _with_estimate(
                request,
                ("messages", "tools", "functions"),
                body.max_completion_tokens or body.max_tokens,
                body.n,
                self.engine.context_window,
            )
        request = self._request(Capability.COMPLETIONS, "completions", payload)
        choices = body.n * len(body.prompts())
        return _with_estimate(request, ("prompt",), body.max_tokens, choices, self.engine.context_window)

    def _request(self, capability: Capability, path: str, payload: dict[str, Any]) -> _Request:
        if capability not in self.engine.capabilities:
            offered = ", ".join(sorted(self.engine.capabilities))
            raise UnsupportedParameter(
                f"The model '{self.served.alias}' does not support {capability.value} (it supports: {offered}). "
                "GET /v1/models lists each model's capabilities.",
                param="model",
            )
        for name in _LOCAL_FIELDS:
            payload.pop(name, None)
        return _Request(path, payload, 0, 0)

    async def _admit(self, request: _Request, charge: Charge) -> None:
        await charge.admit(
            model=self.served.snapshot,
            pricing=self.served.settings.pricing,
            prompt_tokens=request.prompt_estimate,
            max_completion_tokens=request.max_completion_tokens,
        )

    async def _post(self, deployment: UpstreamDeployment, request: _Request) -> dict[str, Any]:
        dispatch = deployment.dispatch()
        try:
            body = {**request.payload, "model": deployment.model_name}
            answer = await deployment.post(request.path, body, slot=dispatch.slot)
        except BaseException as exc:
            dispatch.end(exc)
            raise
        dispatch.end(None)
        return answer

    async def _retrying(self, attempt: Callable[[UpstreamDeployment], Awaitable[_T]]) -> tuple[_T, UpstreamDeployment]:
        """``attempt`` on the deployment the balancer picks, retried (see the module docstring)."""
        engine, routing = self.engine, self.engine.routing
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

    async def _events(self, opened: _OpenStream, request: _Request, charge: Charge) -> AsyncGenerator[Event, None]:
        """The upstream's chunks as events. Counted when they end, however they end (the caller closes them
        before it settles): with the upstream's usage, or without one (the client left first, or the upstream
        sent none) with the prompt estimate and the streamed characters."""
        opened.started = True
        usage: TokenUsage | None = None
        chars = 0
        try:
            async for chunk in opened.payloads():
                if "usage" in chunk:
                    usage = usage_of(chunk["usage"]) or usage
                for choice in choices_of(self.served, chunk.get("choices")):
                    index = int(choice.get("index", 0))
                    if text := choice_text(choice):
                        if not chars:
                            charge.first_token()
                        chars += len(text)
                        yield TextDelta(index, text, logprobs_of(choice) or ())
                    for delta in call_deltas(index, choice):
                        if not chars:
                            charge.first_token()
                        chars += len(delta.arguments) + len(delta.name or "")
                        yield delta
                    if choice.get("finish_reason") is not None:
                        yield ChoiceEnd(index, finish_reason_of(self.served, choice["finish_reason"]))
        except BaseException as exc:
            opened.dispatch.end(exc)
            raise
        finally:
            charge.count(usage or TokenUsage(request.prompt_estimate, estimated_tokens(chars)))
        opened.dispatch.end(None)
        yield UsageReport(usage or TokenUsage(request.prompt_estimate, estimated_tokens(chars)))


def _with_estimate(
    request: _Request, fields: tuple[str, ...], max_tokens: int | None, choices: int, window: int
) -> _Request:
    """The prompt estimate from ``fields`` of the payload (a chat's tool definitions count too)."""
    sent = [request.payload[name] for name in fields if name in request.payload]
    estimate = estimated_tokens(len(json.dumps(sent[0] if len(sent) == 1 else sent, ensure_ascii=False)))
    completion = (max_tokens or max(1, window - estimate)) * choices
    return _Request(request.path, request.payload, estimate, completion)


@dataclass(slots=True)
class _OpenStream:
    """An upstream stream that answered 200 and sent its first event (None: it ended at once)."""

    dispatch: Dispatch
    close: Callable[[], Coroutine[Any, Any, None]]
    events: AsyncIterator[dict[str, Any]]
    first: dict[str, Any] | None
    started: bool = False

    async def payloads(self) -> AsyncIterator[dict[str, Any]]:
        if self.first is not None:
            yield self.first
        async for payload in self.events:
            yield payload

    def abandon(self, charge: Charge) -> None:
        """Nobody reads this stream (the client left before its body ran): close the upstream request."""
        if not self.started:
            self.dispatch.end(None)
            charge.meter.spawn(self.close())
