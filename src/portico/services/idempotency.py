"""Idempotency keys: the first request with a key claims it, its response is stored, retries get that response.

The claim is an INSERT on the (project, key) primary key, so it is atomic across processes sharing the
database: of concurrent requests with one key exactly one runs. The others see the record and get its stored
response, a conflict (another body, or still running), or, when the record has expired or its owner's lock
lapsed (the process died), take it over by compare-and-set.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from sqlalchemy.exc import IntegrityError

from portico.constants import IdempotencyStatus
from portico.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from portico.settings import IdempotencySettings
from portico.storage import idempotency as queries
from portico.storage.database import Database
from portico.storage.resources import IdempotencyRecord

logger = logging.getLogger("portico.idempotency")

MAX_KEY_LENGTH = 255
# What a request that finds its key in progress is told to wait before retrying.
IN_PROGRESS_RETRY_AFTER_S = 1.0
# Expired records are deleted by claims, at most this often per process and this many at a time, so the
# table stays small without a sweeper process and without a write per request.
PURGE_INTERVAL_S = 60.0
PURGE_BATCH = 1000
# A claim that races with releases or take-overs of the same key gives up after this many rounds.
_CLAIM_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """The right to run a request. ``locked_until`` also fences its writes: after a take-over they match nothing."""

    project_id: str
    key: str
    locked_until: float


class RequestFingerprint:
    """sha256 of a request's method, path and query string, and of its body fed as it arrives.

    A multipart body counts less its boundary (clients draw a new one for each attempt).
    """

    def __init__(self, method: str, path: str, query: str, content_type: str | None = None) -> None:
        self._digest = hashlib.sha256()
        for part in (method, path, query):
            self._digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
        self._boundary = _multipart_boundary(content_type)
        self._tail = b""  # held back: it may be the start of a boundary split across chunks

    @property
    def multipart(self) -> bool:
        return self._boundary is not None

    def update(self, chunk: bytes) -> None:
        if self._boundary is None:
            self._digest.update(chunk)
            return
        data = (self._tail + chunk).replace(self._boundary, b"")
        cut = max(0, len(data) - len(self._boundary) + 1)
        self._digest.update(data[:cut])
        self._tail = data[cut:]

    def hexdigest(self) -> str:
        self._digest.update(self._tail)
        self._tail = b""
        return self._digest.hexdigest()


def request_fingerprint(method: str, path: str, query: str, body: bytes, content_type: str | None = None) -> str:
    """The fingerprint of a whole request. A JSON body counts by its value (key order and whitespace do not
    matter), a multipart body less its boundary, any other body by its bytes."""
    fingerprint = RequestFingerprint(method, path, query, content_type)
    fingerprint.update(body if fingerprint.multipart else _canonical(body))
    return fingerprint.hexdigest()


def _canonical(body: bytes) -> bytes:
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except (ValueError, TypeError):  # not JSON, or numbers orjson cannot hold: the bytes themselves
        return body


def _multipart_boundary(content_type: str | None) -> bytes | None:
    if content_type is None or not content_type.lower().startswith("multipart/"):
        return None
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return b"--" + value.strip('"').encode("latin-1")
    return None


class IdempotencyService:
    def __init__(
        self, database: Database, settings: IdempotencySettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._database = database
        self._ttl_s = settings.ttl_s
        self._lock_s = settings.lock_s
        self._clock = clock
        self._next_purge = 0.0

    async def claim(self, project_id: str, key: str, request_hash: str) -> Claim | StoredResponse:
        """The claim to run the request, or the stored response of an earlier one with the same body.

        Raises ``IdempotencyKeyReused`` for a different body, ``IdempotencyKeyInProgress`` while the first
        request still runs.
        """
        await self._purge_if_due()
        for _ in range(_CLAIM_ROUNDS):
            now = self._clock()
            claim = Claim(project_id, key, now + self._lock_s)
            if await self._insert(claim, request_hash, now):
                return claim
            async with self._database.session() as session:
                record = await queries.get_record(session, project_id, key)
            if record is None:  # released or purged since the insert failed
                continue
            if record.expires_at > now:
                if record.request_hash != request_hash:
                    raise IdempotencyKeyReused()
                if record.status == IdempotencyStatus.COMPLETED:
                    return _stored(record)
                if record.locked_until > now:
                    raise IdempotencyKeyInProgress(retry_after=IN_PROGRESS_RETRY_AFTER_S)
            # Expired, or its owner's lock lapsed: take it over, unless another request just did.
            if await self._take_over(record, claim, request_hash, now):
                return claim
        raise IdempotencyKeyInProgress(retry_after=IN_PROGRESS_RETRY_AFTER_S)

    async def complete(self, claim: Claim, response: StoredResponse) -> bool:
        """Store the response for replay; False if the claim was lost (its lock lapsed and a retry took over)."""
        async with self._database.session() as session:
            stored = await queries.complete_record(
                session,
                claim.project_id,
                claim.key,
                locked_until=claim.locked_until,
                response_status=response.status,
                response_headers=[[name, value] for name, value in response.headers],
                response_body=response.body,
                expires_at=self._expiry(self._clock()),
            )
            await session.commit()
        return stored

    async def release(self, claim: Claim) -> None:
        """Give the key up without a stored response, so a retry runs the request again."""
        async with self._database.session() as session:
            await queries.delete_claim(session, claim.project_id, claim.key, locked_until=claim.locked_until)
            await session.commit()

    async def lookup(self, project_id: str, key: str) -> StoredResponse | None:
        """The stored response of the key, while it has not expired."""
        async with self._database.session() as session:
            record = await queries.get_record(session, project_id, key)
        if record is None or record.status != IdempotencyStatus.COMPLETED or record.expires_at <= self._clock():
            return None
        return _stored(record)

    async def purge_expired(self, limit: int = PURGE_BATCH) -> int:
        """Delete up to ``limit`` expired records; how many were deleted."""
        async with self._database.session() as session:
            deleted = await queries.delete_expired(session, now=self._clock(), limit=limit)
            await session.commit()
        return deleted

    async def _insert(self, claim: Claim, request_hash: str, now: float) -> bool:
        record = IdempotencyRecord(
            project_id=claim.project_id,
            key=claim.key,
            request_hash=request_hash,
            status=IdempotencyStatus.IN_PROGRESS,
            locked_until=claim.locked_until,
            created_at=int(now),
            expires_at=self._expiry(now),
        )
        try:
            async with self._database.session() as session:
                queries.add_record(session, record)
                await session.commit()
        except IntegrityError:  # the project already has a record for this key
            return False
        return True

    async def _take_over(self, record: IdempotencyRecord, claim: Claim, request_hash: str, now: float) -> bool:
        values = {
            "request_hash": request_hash,
            "status": IdempotencyStatus.IN_PROGRESS,
            "response_status": None,
            "response_headers": None,
            "response_body": None,
            "locked_until": claim.locked_until,
            "created_at": int(now),
            "expires_at": self._expiry(now),
        }
        async with self._database.session() as session:
            taken = await queries.replace_record(
                session, claim.project_id, claim.key, queries.version_of(record), values
            )
            await session.commit()
        return taken

    async def _purge_if_due(self) -> None:
        now = self._clock()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_S
        try:
            deleted = await self.purge_expired()
        except Exception:  # housekeeping: the next claim after the interval tries again
            logger.warning("deleting expired idempotency records failed", exc_info=True)
            return
        if deleted:
            logger.info("expired idempotency records deleted", extra={"deleted": deleted})

    def _expiry(self, now: float) -> int:
        return math.ceil(now + self._ttl_s)


def _stored(record: IdempotencyRecord) -> StoredResponse:
    assert record.response_status is not None and record.response_body is not None
    headers = [(name, value) for name, value in record.response_headers or []]
    return StoredResponse(record.response_status, headers, bytes(record.response_body))
