"""Server-sent events: the line decoder, the readers that turn events into typed items, and the sync and async
streams that iterate them, retrying or resuming a broken stream when that cannot repeat what was delivered.

Portico's streams send ``data: {json}`` events, ``: heartbeat`` comments, and end with ``data: [DONE]``; an
error after the stream started arrives as one ``data: {"error": {...}}`` event and the stream ends without
``[DONE]``. A job's events are named (``event:``), carry an ``id:`` and end after the terminal event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from portico_client._base_client import RetryBudget, connection_error
from portico_client._exceptions import APIConnectionError, PorticoError, error_from_envelope
from portico_client.types import JobEvent, Usage

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DONE = "[DONE]"
JOB_TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "expired"})


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str | None
    id: str | None


class SSEDecoder:
    """Lines in, events out (the WHATWG rules Portico's frames need: data, event, id, comments). An ``id:``
    becomes the last event id only when its event is complete, so a reconnection never skips a cut-off event."""

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self._id: str | None = None
        self._data: list[str] = []
        self._event: str | None = None

    def decode(self, line: str) -> ServerSentEvent | None:
        """The event a blank line completes, else None."""
        if not line:
            self.last_event_id = self._id
            event = ServerSentEvent("\n".join(self._data), self._event, self._id) if self._data else None
            self._data, self._event = [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def discard_partial(self) -> None:
        """Forget an event cut off by a dropped connection: the server sends it again after a reconnection."""
        self._id, self._data, self._event = self.last_event_id, [], None


class EventReader(Generic[T]):
    """Turns one stream's events into items. It also decides whether a broken stream may be opened again."""

    def __init__(self, *, resumable: bool = False) -> None:
        self.decoder = SSEDecoder()
        self.resumable = resumable
        self.done = False
        self.usage: Usage | None = None
        self._delivered = 0
        self._delivered_at_last_break = 0

    def feed(self, line: str) -> list[T]:
        """The item the line completes, if any. Lines after the last event are read (the server ends the
        response there), so the connection is released cleanly."""
        event = self.decoder.decode(line)
        item = None if event is None or self.done else self.parse(event)
        if item is None:
            return []
        self._delivered += 1
        return [item]

    def finish(self) -> None:
        """The response ended: fine after the stream's last event, a broken connection otherwise."""
        if not self.done:
            raise APIConnectionError("The stream ended before its last event (the connection was closed).")

    def parse(self, event: ServerSentEvent) -> T | None:
        raise NotImplementedError

    def raise_if_error(self, event: ServerSentEvent) -> Any:
        """The event's JSON; an error event is raised as the exception of its ``type``."""
        payload = json.loads(event.data)
        if isinstance(payload, dict) and "error" in payload and event.event in (None, "error"):
            raise error_from_envelope(payload, status_code=None)
        return payload

    def retry_delay(self, error: PorticoError, budget: RetryBudget) -> float | None:
        """Seconds to wait before opening the stream again, or None to raise ``error``. A stream that is not
        resumable is opened again only if it delivered nothing yet (a retry would repeat what was delivered)."""
        if not self.resumable and self._delivered:
            return None
        if self._delivered > self._delivered_at_last_break:
            budget.restart()
        self._delivered_at_last_break = self._delivered
        self.decoder.discard_partial()
        return budget.delay_for(error)


class ChunkReader(EventReader[M]):
    """``data:`` chunks of one model until ``[DONE]``; remembers the last usage a chunk carried."""

    def __init__(self, model: type[M]) -> None:
        super().__init__()
        self._model = model

    def parse(self, event: ServerSentEvent) -> M | None:
        if event.data == DONE:
            self.done = True
            return None
        chunk = self._model.model_validate(self.raise_if_error(event))
        usage = getattr(chunk, "usage", None)
        if isinstance(usage, Usage):
            self.usage = usage
        return chunk


class JobEventReader(EventReader[JobEvent]):
    """A job's named events until its terminal one; heartbeats (keep-alives, no news) are left out."""

    def __init__(self) -> None:
        super().__init__(resumable=True)

    def parse(self, event: ServerSentEvent) -> JobEvent | None:
        data = self.raise_if_error(event)
        if event.event == "heartbeat":
            return None
        job_event = JobEvent(id=int(event.id or 0), event=event.event or "message", data=data)
        if job_event.event in JOB_TERMINAL_EVENTS:
            self.done = True
            if isinstance(data.get("usage"), dict):
                self.usage = Usage.model_validate(data["usage"])
        return job_event


@contextmanager
def transport_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as exc:
        raise connection_error(exc) from exc


class _BaseStream(Generic[T]):
    def __init__(self, reader: EventReader[T], response: httpx.Response, budget: RetryBudget) -> None:
        self._reader = reader
        self._response = response
        self._budget = budget

    @property
    def usage(self) -> Usage | None:
        """The usage the stream reported (its final usage chunk, or a job's terminal event), once received."""
        return self._reader.usage

    @property
    def request_id(self) -> str | None:
        request_id: str | None = self._response.headers.get("x-request-id")
        return request_id


class Stream(_BaseStream[T]):
    """Iterate it for the items; use it as a context manager (or iterate to the end) to release the connection."""

    def __init__(
        self,
        reader: EventReader[T],
        response: httpx.Response,
        budget: RetryBudget,
        reopen: Callable[[str | None], httpx.Response],
    ) -> None:
        super().__init__(reader, response, budget)
        self._reopen = reopen

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                try:
                    yield from self._items()
                    return
                except PorticoError as error:
                    delay = self._reader.retry_delay(error, self._budget)
                    if delay is None:
                        raise
                self._response.close()
                time.sleep(delay)
                self._response = self._reopen(self._reader.decoder.last_event_id)
        finally:
            self.close()

    def _items(self) -> Iterator[T]:
        with transport_errors():
            for line in self._response.iter_lines():
                yield from self._reader.feed(line)
        self._reader.finish()

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class AsyncStream(_BaseStream[T]):
    """``async for`` it for the items; use it as an async context manager to release the connection early."""

    def __init__(
        self,
        reader: EventReader[T],
        response: httpx.Response,
        budget: RetryBudget,
        reopen: Callable[[str | None], Awaitable[httpx.Response]],
    ) -> None:
        super().__init__(reader, response, budget)
        self._reopen = reopen

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            while True:
                try:
                    async for item in self._items():
                        yield item
                    return
                except PorticoError as error:
                    delay = self._reader.retry_delay(error, self._budget)
                    if delay is None:
                        raise
                await self._response.aclose()
                await asyncio.sleep(delay)
                self._response = await self._reopen(self._reader.decoder.last_event_id)
        finally:
            await self.aclose()

    async def _items(self) -> AsyncIterator[T]:
        with transport_errors():
            async for line in self._response.aiter_lines():
                for item in self._reader.feed(line):
                    yield item
        self._reader.finish()

    async def aclose(self) -> None:
        await self._response.aclose()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()
