"""An upstream OpenAI-compatible server answering for a model (``engine = "upstream"``).

One pooled ``httpx.AsyncClient`` per upstream (keep-alive, at most ``max_concurrency`` connections), opened in
``start`` and closed in ``close``. ``upstream_errors`` is the one place httpx failures and upstream error
statuses become Portico errors. The engine does not tokenize or generate locally: ``services/upstream.py``
sends the request bodies through ``post`` and ``stream``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import httpx

from portico.constants import HEADER_RETRY_AFTER, Capability
from portico.engines.base import ChatPrompt, ChatTurn, EngineStats, Generation, GenerationRequest
from portico.errors import (
    EngineError,
    GenerationTimeout,
    InvalidRequest,
    UnsupportedParameter,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from portico.settings import ModelSettings

DEFAULT_CONTEXT_WINDOW = 4096  # what /v1/models reports and the reservation assumes without `context_window`
MAX_UPSTREAM_MESSAGE = 500  # characters of an upstream's error message passed on to the client


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get(HEADER_RETRY_AFTER, "")))
    except ValueError:
        return None


class UpstreamEngine:
    """The ``Engine`` interface for a model served elsewhere: capabilities from config, work over HTTP."""

    def __init__(self, settings: ModelSettings) -> None:
        if settings.upstream is None:  # settings validation guarantees it
            raise EngineError(f"model '{settings.alias}' has engine 'upstream' but no [upstream] table")
        self.settings = settings.upstream
        self.alias = settings.alias
        self.model_name = settings.upstream.model or settings.snapshot
        self.context_window = settings.context_window or DEFAULT_CONTEXT_WINDOW
        self.capabilities = frozenset(Capability(name) for name in settings.upstream.capabilities)
        self.stats = EngineStats()
        self.slots = settings.upstream.max_concurrency
        key = settings.upstream.api_key()
        self._secret = key.get_secret_value() if key is not None else None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        headers = {"authorization": f"Bearer {self._secret}"} if self._secret else {}
        limit = self.settings.max_concurrency
        self._client = httpx.AsyncClient(
            base_url=self.settings.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(self.settings.timeout_s),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

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

    # -- HTTP ------------------------------------------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise UpstreamUnavailable(f"The upstream for '{self.alias}' is not started.")
        return self._client

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
        message = ""
        try:
            error = response.json().get("error")
            message = error.get("message", "") if isinstance(error, dict) else str(error or "")
        except (ValueError, AttributeError):
            message = response.text
        raise InvalidRequest(f"{name} rejected the request (HTTP {status}): {self._scrub(str(message))}")

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` (relative to ``base_url``); the JSON answer, or the mapped error."""
        with self.upstream_errors():
            response = await self.client.post(path, json=body)
        self.raise_for_status(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamError(f"The upstream serving '{self.alias}' answered with something other than JSON.")
        return answer

    async def open_stream(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """Send a streamed request and wait for its status; the open response, or the mapped error."""
        client = self.client
        with self.upstream_errors():
            response = await client.send(client.build_request("POST", path, json=body), stream=True)
            if response.status_code >= 400:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        self.raise_for_status(response)
        return response

    async def events(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        """The JSON payloads of an open SSE response until ``[DONE]``; the response is closed however it ends."""
        try:
            with self.upstream_errors():
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
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
