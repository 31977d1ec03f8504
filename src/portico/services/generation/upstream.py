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
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from portico.constants import Capability, FinishReason, Priority
from portico.engines.registry import ServedModel
from portico.engines.upstream import UPSTREAM_FAILURES, Dispatch, UpstreamDeployment, UpstreamEngine
from portico.errors import CircuitOpen, PorticoError, UnsupportedParameter, UpstreamError
from portico.schemas.chat import ChatCompletionRequest
from portico.schemas.embeddings import EmbeddingRequest
from portico.services.generation.types import (
    ENDPOINT_CHAT,
    Answer,
    Call,
    Choice,
    ChoiceEnd,
    Event,
    Opened,
    Origin,
    TextDelta,
    TextRequest,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopToken,
    UsageReport,
    Vectors,
)
from portico.settings import RoutingSettings
from portico.usage.meter import Charge
from portico.usage.tokens import TokenUsage

_T = TypeVar("_T")
logger = logging.getLogger("portico.gateway")

CHARS_PER_TOKEN = 3  # the estimate's ratio: generous for English with BPE tokenizers (about 4 characters a token)
# Fields Portico keeps for itself rather than sending upstream (`store` would store the answer upstream too).
_LOCAL_FIELDS = ("store", "metadata", "stream", "stream_options")


def _tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _usage(raw: Any) -> TokenUsage | None:
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
    return TokenUsage(prompt, completion, cached)


def _choice_text(choice: dict[str, Any]) -> str:
    """A choice's text in a chat answer, a completion answer, or either kind of stream chunk."""
    part = choice.get("message") or choice.get("delta")
    text = part.get("content") if isinstance(part, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


def _calls(choice: dict[str, Any]) -> tuple[ToolCall, ...]:
    """The tool calls of a chat answer's choice (a legacy ``function_call`` as one call without an id)."""
    message = choice.get("message")
    if not isinstance(message, dict):
        return ()
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict) and isinstance(c.get("function"), dict)]
    found = [ToolCall(str(c.get("id") or ""), *_function(c["function"])) for c in calls]
    if isinstance(function := message.get("function_call"), dict):
        found.append(ToolCall("", *_function(function)))
    return tuple(found)


def _function(function: dict[str, Any]) -> tuple[str, str]:
    return str(function.get("name") or ""), str(function.get("arguments") or "")


def _call_deltas(index: int, choice: dict[str, Any]) -> list[ToolCallDelta]:
    """A stream chunk's tool-call deltas, relayed as they came (each call's own ``index``)."""
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return []
    deltas = []
    for call in delta.get("tool_calls") or []:
        if isinstance(call, dict):
            function = call.get("function")
            name, arguments = _function(function) if isinstance(function, dict) else ("", "")
            deltas.append(ToolCallDelta(index, int(call.get("index", 0)), call.get("id"), name or None, arguments))
    if isinstance(function := delta.get("function_call"), dict):
        name, arguments = _function(function)
        deltas.append(ToolCallDelta(index, 0, None, name or None, arguments))
    return deltas


def _logprobs(choice: dict[str, Any]) -> tuple[TokenLogprob, ...] | None:
    """A choice's logprobs, in chat's shape or the legacy completions one; None if it has none."""
    raw = choice.get("logprobs")
    if not isinstance(raw, dict):
        return None
    try:
        if isinstance(content := raw.get("content"), list):
            return tuple(_token(t) for t in content)
        tokens = raw.get("tokens") or []
        tops = raw.get("top_logprobs") or [None] * len(tokens)
        return tuple(
            TokenLogprob(
                token,
                float(logprob or 0.0),
                tuple(token.encode()),
                tuple(TopToken(k, float(v), tuple(k.encode())) for k, v in (top or {}).items()),
            )
            for token, logprob, top in zip(tokens, raw.get("token_logprobs") or [], tops, strict=False)
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _token(raw: dict[str, Any]) -> TokenLogprob:
    top = tuple(_top(alternative) for alternative in raw.get("top_logprobs") or [])
    return TokenLogprob(raw["token"], float(raw["logprob"]), tuple(raw.get("bytes") or ()), top)


def _top(raw: dict[str, Any]) -> TopToken:
    return TopToken(raw["token"], float(raw["logprob"]), tuple(raw.get("bytes") or ()))


def _malformed(served: ServedModel) -> UpstreamError:
    return UpstreamError(f"The upstream serving '{served.alias}' answered in a shape Portico does not pass on.")


def _choices(served: ServedModel, raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(c, dict) and isinstance(c.get("index", 0), int) for c in raw):
        raise _malformed(served)
    return raw


def _finish(served: ServedModel, raw: Any) -> FinishReason:
    try:
        reason = FinishReason(raw)
    except ValueError:
        raise _malformed(served) from None
    if reason is FinishReason.CANCELLED:
        raise _malformed(served)
    return reason


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
            Choice(_choice_text(c), _finish(self.served, c.get("finish_reason")), _calls(c), _logprobs(c))
            for c in sorted(_choices(self.served, answer.get("choices")), key=lambda c: int(c.get("index", 0)))
        ]
        usage = _usage(answer.get("usage"))
        if usage is None:  # an upstream that reports no usage: the estimate, and the answer's characters
            usage = TokenUsage(request.prompt_estimate, _tokens(sum(len(c.text) for c in choices)))
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
            raise _malformed(self.served)
        try:
            vectors = [[float(x) for x in item["embedding"]] for item in sorted(data, key=lambda i: i["index"])]
        except (KeyError, TypeError, ValueError):
            raise _malformed(self.served) from None
        usage = _usage(answer.get("usage")) or TokenUsage(request.prompt_estimate)
        charge.count(TokenUsage(usage.prompt_tokens))
        return Vectors(vectors, usage.prompt_tokens, Origin(self.served.snapshot, deployment.name))

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
                    usage = _usage(chunk["usage"]) or usage
                for choice in _choices(self.served, chunk.get("choices")):
                    index = int(choice.get("index", 0))
                    if text := _choice_text(choice):
                        if not chars:
                            charge.first_token()
                        chars += len(text)
                        yield TextDelta(index, text, _logprobs(choice) or ())
                    for delta in _call_deltas(index, choice):
                        if not chars:
                            charge.first_token()
                        chars += len(delta.arguments) + len(delta.name or "")
                        yield delta
                    if choice.get("finish_reason") is not None:
                        yield ChoiceEnd(index, _finish(self.served, choice["finish_reason"]))
        except BaseException as exc:
            opened.dispatch.end(exc)
            raise
        finally:
            charge.count(usage or TokenUsage(request.prompt_estimate, _tokens(chars)))
        opened.dispatch.end(None)
        yield UsageReport(usage or TokenUsage(request.prompt_estimate, _tokens(chars)))


def _with_estimate(
    request: _Request, fields: tuple[str, ...], max_tokens: int | None, choices: int, window: int
) -> _Request:
    """The prompt estimate from ``fields`` of the payload (a chat's tool definitions count too)."""
    sent = [request.payload[name] for name in fields if name in request.payload]
    estimate = _tokens(len(json.dumps(sent[0] if len(sent) == 1 else sent, ensure_ascii=False)))
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
