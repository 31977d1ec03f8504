"""``Idempotency-Key`` on POST: the first response to a key is stored and replayed to retries of the same request.

A pure ASGI middleware inside ``BodyLimitMiddleware``. It authenticates the caller itself, since keys are per
project; a request that fails authentication passes through untouched and the route answers 401.

A body that ``BodyLimitMiddleware`` buffered arrives whole: the key is claimed before the app runs. An upload
streams through in pieces (it is never held in memory): it is fingerprinted as it passes, and claimed when its
last piece arrives, before the app sees that piece; if the key turns out taken, the app's read fails (the route
discards its partial file) and the stored response or the conflict is sent instead.

Which responses are stored:

- every response below 500 except 401, 403 (about the caller, not the request), 408, 409 and 429 (try again
  later): a success, and a 4xx the same request would get again, are replayed;
- a stream only when it ended with ``data: [DONE]``: one cut short by an error is not;
- nothing for a 5xx, a request that raised, or a client that left mid-response: the key is released, so a
  retry runs the request again.

Admin routes ignore the header: their responses hold API key secrets, which are never stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico.api.deps import get_principal
from portico.api.errors import error_response
from portico.api.streaming import DONE_FRAME, HEARTBEAT_FRAME
from portico.auth.principal import Principal
from portico.constants import (
    HEADER_IDEMPOTENCY_KEY,
    HEADER_IDEMPOTENT_REPLAYED,
    HEADER_PROCESSING_MS,
    HEADER_REQUEST_ID,
)
from portico.errors import InvalidRequest, PorticoError
from portico.services.idempotency import (
    MAX_KEY_LENGTH,
    Claim,
    IdempotencyService,
    RequestFingerprint,
    StoredResponse,
    request_fingerprint,
)

logger = logging.getLogger("portico.idempotency")

_UNGUARDED_PREFIXES = ("/v1/admin/",)
_NOT_STORED = frozenset({401, 403, 408, 409, 429})
# Set again for each response (by RequestContextMiddleware, the server, or the replay itself).
_PER_RESPONSE_HEADERS = frozenset({HEADER_REQUEST_ID, HEADER_PROCESSING_MS, "content-length", "date", "server"})
# Bodies larger than this are fingerprinted on a worker thread, so a large prompt stalls no other request.
_INLINE_FINGERPRINT_BYTES = 65_536
_releases: set[asyncio.Task[None]] = set()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _idempotency_key(scope)
        principal = await _principal(scope) if key is not None else None
        if key is None or principal is None:
            await self.app(scope, receive, send)
            return
        if not 0 < len(key) <= MAX_KEY_LENGTH:
            invalid = InvalidRequest(
                f"The Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} characters; this one has {len(key)}. "
                "Use a UUID or another unique string per request.",
                param="Idempotency-Key",
            )
            await error_response(invalid, path=scope["path"])(scope, receive, send)
            return
        first = await receive()
        if first["type"] != "http.request":  # the client left before sending its body
            return
        recording = _Recording(scope["app"].state.runtime.idempotency, principal.project_id, key, send)
        if first.get("more_body", False):
            await recording.run(self.app, scope, recording.claiming_at_end(scope, first, receive))
            return
        body = first.get("body", b"")
        try:
            outcome = await recording.service.claim(principal.project_id, key, await _fingerprint(scope, body))
        except PorticoError as exc:
            await error_response(exc, path=scope["path"])(scope, receive, send)
            return
        if isinstance(outcome, StoredResponse):
            await _send_replay(outcome, send)
            return
        recording.claim = outcome
        await recording.run(self.app, scope, _replay_body(body, receive))


def _idempotency_key(scope: Scope) -> str | None:
    """The header's value on a POST that the middleware guards, else None."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].startswith(_UNGUARDED_PREFIXES):
        return None
    for name, value in scope["headers"]:
        if name == HEADER_IDEMPOTENCY_KEY.encode():
            decoded: str = value.decode("latin-1").strip()
            return decoded
    return None


async def _principal(scope: Scope) -> Principal | None:
    try:
        return await get_principal(Request(scope))
    except PorticoError:  # the route reports it (401), with no key claimed
        return None


def _content_type(scope: Scope) -> str | None:
    return next((value.decode("latin-1") for name, value in scope["headers"] if name == b"content-type"), None)


async def _fingerprint(scope: Scope, body: bytes) -> str:
    args = (scope["method"], scope["path"], scope["query_string"].decode("latin-1"), body, _content_type(scope))
    if len(body) <= _INLINE_FINGERPRINT_BYTES:
        return request_fingerprint(*args)
    return await asyncio.to_thread(request_fingerprint, *args)


def _replay_body(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the body once, then passes through (so disconnects still arrive)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_replay(stored: StoredResponse, send: Send) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in stored.headers]
    headers.append((b"content-length", str(len(stored.body)).encode()))
    headers.append((HEADER_IDEMPOTENT_REPLAYED.encode(), b"true"))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})


class _Superseded(Exception):
    """Raised into the app's read of a streamed body when the key was not ours to claim."""

    def __init__(self, outcome: StoredResponse | PorticoError) -> None:
        super().__init__("the idempotency key was taken")
        self.outcome = outcome


class _Recording:
    """Runs the request under a claim, captures its response, and stores or releases the key before the
    response's last byte goes out (so a client that retries at once finds the record settled)."""

    def __init__(self, service: IdempotencyService, project_id: str, key: str, send: Send) -> None:
        self.service = service
        self.project_id = project_id
        self.key = key
        self.claim: Claim | None = None  # None until claimed; never set if the app answers before the body ends
        self.downstream = send
        self.started = False
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.settled = False

    def claiming_at_end(self, scope: Scope, first: Message, receive: Receive) -> Receive:
        """A receive that fingerprints a streamed body and claims the key before handing on its last piece."""
        query = scope["query_string"].decode("latin-1")
        fingerprint = RequestFingerprint(scope["method"], scope["path"], query, _content_type(scope))
        pending: Message | None = first

        async def claiming() -> Message:
            nonlocal pending
            message = pending or await receive()
            pending = None
            if message["type"] != "http.request":
                return message
            fingerprint.update(message.get("body", b""))
            if not message.get("more_body", False):
                try:
                    outcome = await self.service.claim(self.project_id, self.key, fingerprint.hexdigest())
                except PorticoError as exc:
                    raise _Superseded(exc) from None
                if isinstance(outcome, StoredResponse):
                    raise _Superseded(outcome)
                self.claim = outcome
            return message

        return claiming

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive) -> None:
        try:
            await app(scope, receive, self.send)
        except _Superseded as superseded:
            if self.started:
                raise
            if isinstance(superseded.outcome, StoredResponse):
                await _send_replay(superseded.outcome, self.downstream)
            else:
                await error_response(superseded.outcome, path=scope["path"])(scope, receive, self.downstream)
            return
        except BaseException:
            await self._release_once()
            raise
        await self._release_once()  # unless settled: the client left, or the response never finished

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            self.headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", [])
                if name.decode("latin-1").lower() not in _PER_RESPONSE_HEADERS
            ]
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            if chunk != HEARTBEAT_FRAME:
                self.chunks.append(chunk)
            if not message.get("more_body", False) and self.claim is not None and not self.settled:
                self.settled = True
                await self._settle(self.claim, b"".join(self.chunks))
        await self.downstream(message)

    async def _settle(self, claim: Claim, body: bytes) -> None:
        if not self._storable(body):
            await self._release(claim)
            return
        try:
            stored = await self.service.complete(claim, StoredResponse(self.status, self.headers, body))
        except Exception:  # the response itself is good: deliver it; the claim lapses after lock_s
            logger.warning("storing an idempotent response failed", exc_info=True)
            return
        if not stored:
            logger.warning("an idempotency claim was taken over before its response was stored")

    def _storable(self, body: bytes) -> bool:
        if self.status >= 500 or self.status in _NOT_STORED:
            return False
        content_type = next((value for name, value in self.headers if name.lower() == "content-type"), "")
        if content_type.startswith("text/event-stream"):
            return body.endswith(DONE_FRAME)
        return True

    async def _release_once(self) -> None:
        if self.claim is not None and not self.settled:
            self.settled = True
            await _shielded(self._release(self.claim))

    async def _release(self, claim: Claim) -> None:
        try:
            await self.service.release(claim)
        except Exception:  # the claim lapses after lock_s instead
            logger.warning("releasing an idempotency claim failed", exc_info=True)


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Finish ``work`` even when this task is being cancelled (a server shutdown, a client gone)."""
    task = asyncio.ensure_future(work)
    _releases.add(task)
    task.add_done_callback(_releases.discard)
    await asyncio.shield(task)
