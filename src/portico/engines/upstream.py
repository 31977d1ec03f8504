"""Upstream OpenAI-compatible servers answering for a model (``engine = "upstream"``).

A model has one or more deployments (``[[models.upstream]]``), each an ``UpstreamDeployment`` with pooled
``httpx.AsyncClient``s (keep-alive, ``max_concurrency`` connections in all, in pools of at most
``CONNECTIONS_PER_CLIENT``, opened in ``start``), its requests in flight and its circuit breaker.
``UpstreamEngine.pick`` balances among them. ``upstream_errors`` and ``raise_for_status`` are the one place httpx
failures and upstream error statuses become Portico errors. Nothing is tokenized or generated locally:
``services/generation/upstream.py`` sends the request bodies through ``post`` and ``open_stream`` and does the retries.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, NoReturn

import httpx

from portico.constants import HEADER_RETRY_AFTER, Capability
from portico.engines.base import ChatPrompt, ChatTurn, EngineStats, Generation, GenerationRequest
from portico.engines.breaker import CircuitBreaker
from portico.errors import (
    GenerationTimeout,
    InvalidRequest,
    UnsupportedParameter,
    UpstreamContextExceeded,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from portico.observability import metrics, tracing
from portico.observability.context import note_upstream_call
from portico.settings import RoutingSettings, UpstreamModel, UpstreamSettings

DEFAULT_CONTEXT_WINDOW = 4096  # what /v1/models reports and the reservation assumes without `context_window`
# Connections per pooled client. httpcore's pool scans all its connections and waiting requests whenever one is
# sent or returned (a cost that grows with the pool), so a deployment's connections are split over small pools.
CONNECTIONS_PER_CLIENT = 4
DRAIN_S = 0.5  # longest wait for the end of a stream's body after its [DONE]
MAX_UPSTREAM_MESSAGE = 500  # characters of an upstream's error message passed on to the client


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get(HEADER_RETRY_AFTER, "")))
    except ValueError:
        return None


# What a deployment's circuit counts as its failure, and what a retry or a fallback may answer instead.
UPSTREAM_FAILURES = (UpstreamError, UpstreamUnavailable, UpstreamRateLimited, GenerationTimeout)


def _context_exceeded(code: object, message: str) -> bool:
    """Whether an upstream's 400 says the prompt is too long (OpenAI's code, or vLLM's and llama.cpp's words)."""
    text = message.lower()
    return code == "context_length_exceeded" or "context length" in text or "context window" in text


class Dispatch:
    """One request to a deployment, from sending until its answer (or stream) ends: the circuit's verdict."""

    def __init__(self, deployment: UpstreamDeployment, slot: int) -> None:
        self.deployment = deployment
        self.slot = slot  # which of the deployment's clients sends it
        self._ended = False
        self._sent_at = time.perf_counter()

    def end(self, error: BaseException | None) -> None:
        """Once: no error or the client's own 4xx (the upstream answered) is a success; an upstream failure is a
        failure; anything else (the client left) is no verdict."""
        if self._ended:
            return
        self._ended = True
        self.deployment.returned(self.slot)
        note_upstream_call(time.perf_counter() - self._sent_at)
        breaker = self.deployment.breaker
        if error is None or isinstance(error, InvalidRequest):
            breaker.succeeded()
        elif isinstance(error, UPSTREAM_FAILURES):
            metrics.upstream_failed(self.deployment.name, error.code)
            breaker.failed()
        else:
            breaker.released()


class UpstreamDeployment:
    """One upstream server for a model: its pooled client, requests in flight, and circuit breaker."""

    def __init__(self, name: str, alias: str, snapshot: str, settings: UpstreamSettings, routing: RoutingSettings):
        self.name = name
        self.alias = alias
        self.settings = settings
        self.model_name = settings.model or snapshot
        self.weight = settings.weight
        self.outstanding = 0  # requests in flight
        self.dispatched = 0  # requests ever sent: spreads light traffic in proportion to the weights
        self.breaker = CircuitBreaker(name, failures=routing.breaker_failures, cooldown_s=routing.breaker_cooldown_s)
        key = settings.api_key()
        self._secret = key.get_secret_value() if key is not None else None
        self._clients: list[httpx.AsyncClient] = []
        self._in_flight: list[int] = []  # per client

    async def start(self) -> None:
        headers = {"authorization": f"Bearer {self._secret}"} if self._secret else {}
        limit = self.settings.max_concurrency
        shares = [min(CONNECTIONS_PER_CLIENT, limit - start) for start in range(0, limit, CONNECTIONS_PER_CLIENT)]
        self._clients = [
            httpx.AsyncClient(
                base_url=self.settings.base_url.rstrip("/") + "/",
                headers=headers,
                timeout=httpx.Timeout(self.settings.timeout_s),
                limits=httpx.Limits(max_connections=share, max_keepalive_connections=share),
            )
            for share in shares
        ]
        self._in_flight = [0] * len(self._clients)

    async def close(self) -> None:
        clients, self._clients, self._in_flight = self._clients, [], []
        for client in clients:
            await client.aclose()

    def dispatch(self) -> Dispatch:
        """Count a request in flight to this deployment until its ``Dispatch`` ends. It goes out on the first of
        the clients with the fewest requests in flight, so light traffic keeps reusing one client's connections."""
        self.outstanding += 1
        self.dispatched += 1
        self.breaker.sending()
        slot = min(range(len(self._in_flight)), key=self._in_flight.__getitem__, default=0)
        if self._in_flight:
            self._in_flight[slot] += 1
        return Dispatch(self, slot)

    def returned(self, slot: int) -> None:
        self.outstanding -= 1
        if slot < len(self._in_flight):
            self._in_flight[slot] -= 1

    # -- HTTP ------------------------------------------------------------------------------------------
    def client(self, slot: int) -> httpx.AsyncClient:
        if slot >= len(self._clients):
            raise UpstreamUnavailable(f"The upstream for '{self.alias}' is not started.")
        return self._clients[slot]

    @contextmanager
    def upstream_errors(self) -> Iterator[None]:
        """httpx failures as Portico errors, named after the model (never the upstream's URL or key)."""
        name = f"The upstream serving '{self.alias}'"
        try:
            yield
        except httpx.TimeoutException as exc:
            raise GenerationTimeout(
                f"{name} did not answer within {self.settings.timeout_s:g}s. Retry, or ask for fewer tokens."
            ) from exc
        except httpx.ConnectError as exc:
            raise UpstreamUnavailable(f"{name} could not be reached. Retry later.") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{name} broke the connection ({type(exc).__name__}). Retry the request.") from exc

    def _scrub(self, text: str) -> str:
        text = text[:MAX_UPSTREAM_MESSAGE]
        return text.replace(self._secret, "***") if self._secret else text

    def raise_for_status(self, response: httpx.Response) -> None:
        """An upstream error status as the Portico error a client should see (the body must be read)."""
        status = response.status_code
        if status < 400:
            return
        name = f"The upstream serving '{self.alias}'"
        if status == 429:
            raise UpstreamRateLimited(
                f"{name} is rate limiting requests. Retry later.", retry_after=_retry_after(response)
            )
        if status >= 500 or status in (401, 403):  # 401/403: Portico's upstream credentials, not the client's
            raise UpstreamError(f"{name} failed with HTTP {status}. Retry the request.")
        message, code = "", None
        try:
            error = response.json().get("error")
            if isinstance(error, dict):
                message, code = str(error.get("message", "")), error.get("code")
            else:
                message = str(error or "")
        except (ValueError, AttributeError):
            message = response.text
        problem = f"{name} rejected the request (HTTP {status}): {self._scrub(message)}"
        if _context_exceeded(code, message):
            raise UpstreamContextExceeded(problem, param="messages")
        raise InvalidRequest(problem)

    async def post(self, path: str, body: dict[str, Any], *, slot: int = 0) -> dict[str, Any]:
        """POST ``body`` to ``path`` (relative to ``base_url``); the JSON answer, or the mapped error."""
        with tracing.span("portico.upstream", deployment=self.name), self.upstream_errors():
            response = await self.client(slot).post(path, json=body, headers=tracing.trace_headers())
        self.raise_for_status(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamError(f"The upstream serving '{self.alias}' answered with something other than JSON.")
        return answer

    async def open_stream(self, path: str, body: dict[str, Any], *, slot: int = 0) -> httpx.Response:
        """Send a streamed request and wait for its status; the open response, or the mapped error."""
        client = self.client(slot)
        with tracing.span("portico.upstream", deployment=self.name), self.upstream_errors():
            request = client.build_request("POST", path, json=body, headers=tracing.trace_headers())
            response = await client.send(request, stream=True)
            if response.status_code >= 400:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        self.raise_for_status(response)
        return response

    async def events(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        """The JSON payloads of an open SSE response until ``[DONE]``; the response is closed however it ends.

        After ``[DONE]`` the rest of the body is read (briefly), so the connection goes back to the pool instead of
        being dropped with unread bytes."""
        try:
            with self.upstream_errors():
                lines = response.aiter_lines()
                async for line in lines:
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        await _drain(lines)
                        return
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        raise UpstreamError(f"The upstream serving '{self.alias}' sent a malformed event.") from None
                    if isinstance(payload, dict) and "error" in payload:
                        raise UpstreamError(f"The upstream serving '{self.alias}' failed mid-stream.")
                    if isinstance(payload, dict):
                        yield payload
        finally:
            await response.aclose()


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read what an upstream sends after ``[DONE]`` (normally nothing but the body's end), for at most a moment."""
    with suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_S):
            async for _ in lines:
                pass


class UpstreamEngine:
    """The ``Engine`` interface for a model served elsewhere: capabilities from config, work over HTTP to one of
    its deployments (weighted least outstanding requests, among those whose circuit lets requests through)."""

    def __init__(self, settings: UpstreamModel) -> None:
        self.alias = settings.alias
        self.routing = settings.routing
        self.deployments = [
            UpstreamDeployment(name, settings.alias, settings.snapshot, deployment, settings.routing)
            for name, deployment in zip(settings.deployment_names(), settings.upstream, strict=True)
        ]
        self.context_window = settings.context_window or DEFAULT_CONTEXT_WINDOW
        # What every deployment serves: a request is never sent where its endpoint does not exist.
        self.capabilities = frozenset.intersection(
            *(frozenset(Capability(name) for name in deployment.capabilities) for deployment in settings.upstream)
        )
        self.stats = EngineStats()
        self.slots = sum(deployment.max_concurrency for deployment in settings.upstream)

    async def start(self) -> None:
        for deployment in self.deployments:
            await deployment.start()

    async def close(self) -> None:
        for deployment in self.deployments:
            await deployment.close()

    def pick(self, tried: Collection[UpstreamDeployment] = ()) -> UpstreamDeployment | None:
        """The deployment for the next attempt, among those whose circuit lets a request through (not yet tried
        by this request if there are such): the fewest requests in flight per unit of weight; on a tie (light
        traffic), the fewest sent per unit of weight, so traffic splits in proportion to the weights. None if
        every circuit is open."""
        available = [deployment for deployment in self.deployments if deployment.breaker.available()]
        fresh = [deployment for deployment in available if deployment not in tried] or available
        if not fresh:
            return None
        return min(fresh, key=lambda d: (d.outstanding / d.weight, d.dispatched / d.weight))

    # -- no local tokenizer or decoder ------------------------------------------------------------------
    def _local(self) -> NoReturn:
        raise UnsupportedParameter(
            f"The model '{self.alias}' is served by an upstream and has no local tokenizer.", param="model"
        )

    def tokenize(self, text: str) -> list[int]:
        self._local()

    def render_chat(self, turns: Sequence[ChatTurn]) -> ChatPrompt:
        self._local()

    def generate(self, request: GenerationRequest) -> Generation:
        self._local()
