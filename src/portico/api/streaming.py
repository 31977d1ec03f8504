"""Everything about SSE: framing, heartbeats, ``[DONE]``, the mid-stream error event and cancellation.

The events are consumed by a pump task that owns the event source, so the response can wait for the next
event with a timeout (and send a heartbeat comment meanwhile) without ever cancelling the source half-way.
When the client goes away the response is cancelled, the pump is cancelled with it, and the source's
``finally`` blocks stop the engine. An API key holds at most ``max_streams_per_key`` open streams per process
(``StreamSlots``): one more is answered 429 before its first frame. When the server starts shutting down,
``OpenStreams`` ends every open stream at once with a retryable error event rather than holding the shutdown
until each client has read its last token.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from portico.api.errors import error_body, error_response
from portico.errors import EngineUnavailable, InvalidRequest, PorticoError, TooManyStreams
from portico.observability import metrics

logger = logging.getLogger("portico.streaming")

HEARTBEAT_FRAME = b": heartbeat\n\n"
DONE_FRAME = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# Frames the pump may run ahead of a slow client before it waits (backpressure on the engine).
_PUMP_BUFFER = 64

_pumps: set[asyncio.Task[None]] = set()
_SHUTTING_DOWN = EngineUnavailable("The server is shutting down and ended this stream early. Retry the request.")


def data_frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@dataclass(frozen=True, slots=True)
class NamedEvent:
    """An event with a name (``event:``) and, when resumable, an id (``id:``, what a reconnecting client sends
    back as ``Last-Event-ID``). Chat streams send plain ``data:`` events; job event streams send these."""

    event: str
    data: dict[str, Any]
    id: int | None = None


def event_frame(event: NamedEvent) -> bytes:
    head = b"" if event.id is None else b"id: %d\n" % event.id
    return head + b"event: " + event.event.encode() + b"\n" + data_frame(event.data)


SSEEvent = dict[str, Any] | NamedEvent


async def named_by_type(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[SSEEvent]:
    """Events that carry their name in ``type`` as named SSE events (the Responses and Anthropic streams)."""
    async for event in events:
        yield NamedEvent(event["type"], event)


# How a stream tells its client it failed: OpenAI's chat streams send one ``data: {"error": ...}`` event;
# the Responses and Anthropic streams send their own named events.
Failure = Callable[[PorticoError], SSEEvent]


def encoded(event: SSEEvent) -> bytes:
    return event_frame(event) if isinstance(event, NamedEvent) else data_frame(event)


class StreamSlots:
    """The event streams each API key holds open in this process, at most ``limit`` per key.

    Kept in process memory: a stream is a connection to this process, and it ends with it. Requests without a
    key (auth off, local use) are not counted.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def take(self, key_id: str | None) -> None:
        if key_id is None:
            return
        if self._open[key_id] >= self.limit:
            raise TooManyStreams(
                f"This API key already has {self.limit} streams open on this server. Close one (or finish "
                "reading it) before opening another, or send stream: false.",
                retry_after=1,
            )
        self._open[key_id] += 1

    def give_back(self, key_id: str | None) -> None:
        if key_id is None:
            return
        self._open[key_id] -= 1
        if not self._open[key_id]:
            del self._open[key_id]


@dataclass(eq=False, slots=True)
class _Pump:
    """One stream's pump task, and whether the server ended it (rather than its client leaving)."""

    task: asyncio.Task[None] | None = None
    ending: bool = False

    def end(self) -> None:
        self.ending = True
        if self.task is not None:
            self.task.cancel()


class OpenStreams:
    """The streams this server has open. ``close`` (the shutdown began) ends each one: its engine stops, its
    usage is recorded, and its client gets an ``engine_unavailable`` error event (retryable) and no ``[DONE]``;
    a stream that opens after that ends the same way before its first token."""

    def __init__(self) -> None:
        self.closing = False
        self._pumps: set[_Pump] = set()

    def add(self, pump: _Pump) -> None:
        self._pumps.add(pump)
        if self.closing:
            pump.end()

    def discard(self, pump: _Pump) -> None:
        self._pumps.discard(pump)

    def close(self) -> None:
        self.closing = True
        for pump in list(self._pumps):
            pump.end()


class _SSEResponse(StreamingResponse):
    """A stream that runs ``on_close`` however it ends, even when the client left before the first frame, or
    was refused one because its key has too many streams open."""

    def __init__(
        self, frames: AsyncIterator[bytes], headers: dict[str, str], on_close: Callable[[], None], pump: _Pump
    ) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self._on_close = on_close
        self._pump = pump

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slots: StreamSlots = scope["app"].state.stream_slots
        key_id: str | None = scope.get("state", {}).get("key_id")
        try:
            slots.take(key_id)
        except TooManyStreams as refused:
            self._on_close()
            await error_response(refused, path=scope["path"])(scope, receive, send)
            return
        open_streams: OpenStreams = scope["app"].state.open_streams
        open_streams.add(self._pump)
        metrics.stream_opened()
        try:
            await super().__call__(scope, receive, send)
        finally:
            metrics.stream_closed()
            open_streams.discard(self._pump)
            slots.give_back(key_id)
            self._on_close()


def sse_response(
    events: AsyncIterator[SSEEvent],
    *,
    heartbeat_s: float,
    headers: dict[str, str] | None = None,
    on_close: Callable[[], None] = lambda: None,
    done_frame: bool = True,
    failure: Failure = error_body,
) -> StreamingResponse:
    """``done_frame=False`` for streams whose last event says they are over (a job's terminal event);
    ``failure`` renders the one event that ends a stream that failed."""
    pump = _Pump()
    frames = _frames(events, heartbeat_s, done_frame, pump, failure)
    return _SSEResponse(frames, {**SSE_HEADERS, **(headers or {})}, on_close, pump)


async def _pump(
    events: AsyncIterator[SSEEvent],
    frames: asyncio.Queue[bytes | None],
    done_frame: bool,
    pump: _Pump,
    failure: Failure,
) -> None:
    """Turn events into frames, then ``[DONE]`` on success (if asked) or one error event otherwise."""
    last: bytes | None
    try:
        async for payload in events:
            await frames.put(encoded(payload))
        last = DONE_FRAME if done_frame else None
    except asyncio.CancelledError:
        if not pump.ending:
            raise  # the client left: nobody reads the frames any more
        last = encoded(failure(_SHUTTING_DOWN))
    except PorticoError as exc:
        last = encoded(failure(exc))
    except Exception:
        logger.exception("stream failed")
        unexpected = PorticoError("The server hit an unexpected error while streaming. Retry the request.")
        last = encoded(failure(unexpected))
    if last is not None:
        await frames.put(last)
    await frames.put(None)


async def _frames(
    events: AsyncIterator[SSEEvent], heartbeat_s: float, done_frame: bool, pump: _Pump, failure: Failure
) -> AsyncIterator[bytes]:
    if pump.ending:  # the shutdown began before this stream's first frame: the source never starts
        yield encoded(failure(_SHUTTING_DOWN))
        return
    frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_PUMP_BUFFER)
    task = asyncio.create_task(_pump(events, frames, done_frame, pump, failure))
    _pumps.add(task)
    task.add_done_callback(_pumps.discard)
    pump.task = task
    try:
        while True:
            try:
                frame = await asyncio.wait_for(frames.get(), timeout=heartbeat_s)
            except TimeoutError:
                if task.done() and frames.empty():  # the pump was cancelled from outside
                    return
                yield HEARTBEAT_FRAME
                continue
            if frame is None:
                return
            yield frame
    finally:
        task.cancel()


def last_event_id_after(value: str | None) -> int:
    """The event id a resumed stream continues after (``Last-Event-ID``; 0: from the start)."""
    if value is None or not value.strip():
        return 0
    try:
        event_id = int(value)
    except ValueError:
        event_id = -1
    if event_id < 0:
        raise InvalidRequest(
            "Last-Event-ID must be the id of an event of this stream (a non-negative integer).", param="Last-Event-ID"
        )
    return event_id
