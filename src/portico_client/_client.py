"""``Portico`` and ``AsyncPortico``: the namespaces, and the loops that send a call's attempts (the only code the
two clients do not share; what to retry and how long to wait is decided in ``_base_client``)."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack

import httpx

from portico_client._base_client import (
    Attempts,
    BaseClient,
    Call,
    ClientOptions,
    StreamCall,
    connection_error,
    error_from_response,
)
from portico_client._exceptions import PorticoError
from portico_client._streaming import AsyncStream, Stream
from portico_client.resources._resource import ClientT
from portico_client.resources.admin import Admin, Usage
from portico_client.resources.conversations import Conversations
from portico_client.resources.inference import Chat, Completions, Embeddings, Models, Tokenize
from portico_client.resources.jobs import Batches, Files, Jobs, Webhooks

T = TypeVar("T")


class Namespaces(Generic[ClientT]):
    """The resources, mounted on a client once (written once for both clients)."""

    def _mount(self, client: ClientT) -> None:
        self.chat = Chat(client)
        self.completions = Completions(client)
        self.embeddings = Embeddings(client)
        self.models = Models(client)
        self.tokenize = Tokenize(client)
        self.jobs = Jobs(client)
        self.files = Files(client)
        self.batches = Batches(client)
        self.webhooks = Webhooks(client)
        self.conversations = Conversations(client)
        self.usage = Usage(client)
        self.admin = Admin(client)


class Portico(BaseClient[httpx.Client], Namespaces["Portico"]):
    """The sync client: ``Portico(base_url=..., api_key=..., max_retries=2, timeout=60)``. ``api_key`` defaults
    to ``$PORTICO_API_KEY``; failed calls are retried ``max_retries`` times (see docs/sdk.md)."""

    def __init__(self, *, http_client: httpx.Client | None = None, **options: Unpack[ClientOptions]) -> None:
        super().__init__(http_client or httpx.Client(), **options)
        self._mount(self)

    def _request(self, call: Call[T]) -> T:
        response = self._send(Attempts(call, self.max_retries), stream=False)
        return call.parse(response)

    def _stream(self, call: StreamCall[T]) -> Stream[T]:
        attempts = Attempts(call, self.max_retries)
        response = self._send(attempts, stream=True)
        return Stream(
            call.reader(),
            response,
            attempts.budget,
            lambda last_event_id: self._send(attempts, stream=True, last_event_id=last_event_id),
        )

    def _follow(self, events: StreamCall[Any], then: Call[T]) -> T:
        """Read a stream to its end, then make ``then``."""
        with self._stream(events) as stream:
            for _ in stream:
                pass
        return self._request(then)

    def _send(self, attempts: Attempts, *, stream: bool, last_event_id: str | None = None) -> httpx.Response:
        while True:
            error: PorticoError
            try:
                response = self._http.send(attempts.build(self._http, last_event_id), stream=stream)
            except httpx.TransportError as exc:
                error = connection_error(exc)
            else:
                if response.is_success:
                    return response
                response.read()
                error = error_from_response(response)
            delay = attempts.budget.delay_for(error)
            if delay is None:
                raise error
            time.sleep(delay)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Portico:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class AsyncPortico(BaseClient[httpx.AsyncClient], Namespaces["AsyncPortico"]):
    """The async client: the same namespaces as ``Portico``, whose methods are awaited."""

    def __init__(self, *, http_client: httpx.AsyncClient | None = None, **options: Unpack[ClientOptions]) -> None:
        super().__init__(http_client or httpx.AsyncClient(), **options)
        self._mount(self)

    async def _request(self, call: Call[T]) -> T:
        response = await self._send(Attempts(call, self.max_retries), stream=False)
        return call.parse(response)

    async def _stream(self, call: StreamCall[T]) -> AsyncStream[T]:
        attempts = Attempts(call, self.max_retries)
        response = await self._send(attempts, stream=True)
        return AsyncStream(
            call.reader(),
            response,
            attempts.budget,
            lambda last_event_id: self._send(attempts, stream=True, last_event_id=last_event_id),
        )

    async def _follow(self, events: StreamCall[Any], then: Call[T]) -> T:
        async with await self._stream(events) as stream:
            async for _ in stream:
                pass
        return await self._request(then)

    async def _send(self, attempts: Attempts, *, stream: bool, last_event_id: str | None = None) -> httpx.Response:
        while True:
            error: PorticoError
            try:
                response = await self._http.send(attempts.build(self._http, last_event_id), stream=stream)
            except httpx.TransportError as exc:
                error = connection_error(exc)
            else:
                if response.is_success:
                    return response
                await response.aread()
                error = error_from_response(response)
            delay = attempts.budget.delay_for(error)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPortico:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()
