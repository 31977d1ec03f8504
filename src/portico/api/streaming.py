"""Everything about SSE: framing, heartbeats, ``[DONE]``, the mid-stream error event and cancellation.

The events are consumed by a pump task that owns the event source, so the response can wait for the next
event with a timeout (and send a heartbeat comment meanwhile) without ever cancelling the source half-way.
When the client goes away the response is cancelled, the pump is cancelled with it, and the source's
``finally`` blocks stop the engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from portico.api.errors import error_body
from portico.errors import PorticoError
from portico.observability import metrics

logger = logging.getLogger("portico.streaming")

HEARTBEAT_FRAME = b": heartbeat\n\n"
DONE_FRAME = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# Frames the pump may run ahead of a slow client before it waits (backpressure on the engine).
_PUMP_BUFFER = 64

_pumps: set[asyncio.Task[None]] = set()


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


class _SSEResponse(StreamingResponse):
    """A stream that runs ``on_close`` however it ends, even when the client left before the first frame."""

    def __init__(self, frames: AsyncIterator[bytes], headers: dict[str, str], on_close: Callable[[], None]) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.stream_opened()
        try:
            await super().__call__(scope, receive, send)
        finally:
            metrics.stream_closed()
            self._on_close()


def sse_response(
    events: AsyncIterator[SSEEvent],
    *,
    heartbeat_s: float,
    headers: dict[str, str] | None = None,
    on_close: Callable[[], None] = lambda: None,
    done_frame: bool = True,
) -> StreamingResponse:
    """``done_frame=False`` for streams whose last event says they are over (a job's terminal event)."""
    frames = _frames(events, heartbeat_s, done_frame)
    return _SSEResponse(frames, {**SSE_HEADERS, **(headers or {})}, on_close)


async def _pump(events: AsyncIterator[SSEEvent], frames: asyncio.Queue[bytes | None], done_frame: bool) -> None:
    """Turn events into frames, then ``[DONE]`` on success (if asked) or one error event otherwise."""
    last: bytes | None
    try:
        async for payload in events:
            await frames.put(event_frame(payload) if isinstance(payload, NamedEvent) else data_frame(payload))
        last = DONE_FRAME if done_frame else None
    except PorticoError as exc:
        last = data_frame(error_body(exc))
    except Exception:
        logger.exception("stream failed")
        unexpected = PorticoError("The server hit an unexpected error while streaming. Retry the request.")
        last = data_frame(error_body(unexpected))
    if last is not None:
        await frames.put(last)
    await frames.put(None)


async def _frames(events: AsyncIterator[SSEEvent], heartbeat_s: float, done_frame: bool) -> AsyncIterator[bytes]:
    frames: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_PUMP_BUFFER)
    pump = asyncio.create_task(_pump(events, frames, done_frame))
    _pumps.add(pump)
    pump.add_done_callback(_pumps.discard)
    try:
        while True:
            try:
                frame = await asyncio.wait_for(frames.get(), timeout=heartbeat_s)
            except TimeoutError:
                if pump.done() and frames.empty():  # the pump was cancelled from outside (shutdown)
                    return
                yield HEARTBEAT_FRAME
                continue
            if frame is None:
                return
            yield frame
    finally:
        pump.cancel()
