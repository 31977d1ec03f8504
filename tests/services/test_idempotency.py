"""The idempotency service on SQLite and PostgreSQL: claims, replays, conflicts, expiry, take-over and purging."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from portico.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from portico.services.idempotency import (
    Claim,
    IdempotencyService,
    RequestFingerprint,
    StoredResponse,
    request_fingerprint,
)
from portico.settings import IdempotencySettings
from portico.storage.database import Database
from portico.storage.resources import IdempotencyRecord

PROJECT = "proj_a"
HASH = "a" * 64
OTHER_HASH = "b" * 64
RESPONSE = StoredResponse(200, [("content-type", "application/json"), ("x-request-cost", "0.01")], b'{"ok":true}')


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(database: Database, clock: Clock) -> IdempotencyService:
    return IdempotencyService(database, IdempotencySettings(ttl_s=100, lock_s=10), clock=clock)


async def test_the_first_claim_runs_and_its_response_is_returned_to_the_next(service: IdempotencyService) -> None:
    claim = await service.claim(PROJECT, "k", HASH)
    assert isinstance(claim, Claim)
    with pytest.raises(IdempotencyKeyInProgress):
        await service.claim(PROJECT, "k", HASH)
    with pytest.raises(IdempotencyKeyReused):
        await service.claim(PROJECT, "k", OTHER_HASH)

    assert await service.complete(claim, RESPONSE)

    assert await service.claim(PROJECT, "k", HASH) == RESPONSE
    assert await service.lookup(PROJECT, "k") == RESPONSE
    with pytest.raises(IdempotencyKeyReused):
        await service.claim(PROJECT, "k", OTHER_HASH)


async def test_keys_of_other_projects_are_independent(service: IdempotencyService) -> None:
    mine = await service.claim(PROJECT, "k", HASH)
    assert isinstance(mine, Claim)
    await service.complete(mine, RESPONSE)

    assert isinstance(await service.claim("proj_b", "k", OTHER_HASH), Claim)
    assert await service.lookup("proj_b", "k") is None


async def test_a_released_claim_lets_the_next_request_run(service: IdempotencyService) -> None:
    claim = await service.claim(PROJECT, "k", HASH)
    assert isinstance(claim, Claim)
    await service.release(claim)

    assert isinstance(await service.claim(PROJECT, "k", OTHER_HASH), Claim)
    assert await service.lookup(PROJECT, "k") is None


async def test_an_expired_record_is_claimed_anew_whatever_its_body(service: IdempotencyService, clock: Clock) -> None:
    claim = await service.claim(PROJECT, "k", HASH)
    assert isinstance(claim, Claim)
    await service.complete(claim, RESPONSE)
    clock.now += 99
    assert await service.claim(PROJECT, "k", HASH) == RESPONSE

    clock.now += 2
    assert await service.lookup(PROJECT, "k") is None
    assert isinstance(await service.claim(PROJECT, "k", OTHER_HASH), Claim)


async def test_one_of_many_takes_over_a_lapsed_claim(service: IdempotencyService, clock: Clock) -> None:
    dead = await service.claim(PROJECT, "k", HASH)
    assert isinstance(dead, Claim)
    clock.now += 11  # lock_s passed: its process died

    outcomes = await asyncio.gather(*(service.claim(PROJECT, "k", HASH) for _ in range(10)), return_exceptions=True)

    claims = [outcome for outcome in outcomes if isinstance(outcome, Claim)]
    assert len(claims) == 1
    assert all(isinstance(outcome, IdempotencyKeyInProgress) for outcome in outcomes if outcome is not claims[0])
    # The dead owner's writes match nothing now; the new owner's apply.
    assert not await service.complete(dead, StoredResponse(500, [], b"late"))
    await service.release(dead)
    assert await service.complete(claims[0], RESPONSE)
    assert await service.lookup(PROJECT, "k") == RESPONSE


async def _completed(service: IdempotencyService, keys: list[str]) -> None:
    for key in keys:
        claim = await service.claim(PROJECT, key, HASH)
        assert isinstance(claim, Claim)
        assert await service.complete(claim, RESPONSE)


async def _stored_keys(database: Database) -> set[str]:
    async with database.session() as session:
        return set((await session.scalars(select(IdempotencyRecord.key))).all())


async def test_purge_deletes_expired_records_a_batch_at_a_time(
    service: IdempotencyService, database: Database, clock: Clock
) -> None:
    await _completed(service, [f"old-{index}" for index in range(5)])
    clock.now += 50
    await _completed(service, ["new"])
    clock.now += 51  # the old ones expired, "new" has 49 s left

    assert await service.purge_expired(limit=3) == 3
    assert await service.purge_expired(limit=3) == 2
    assert await service.purge_expired(limit=3) == 0
    assert await _stored_keys(database) == {"new"}


async def test_claims_delete_expired_records_now_and_then(
    service: IdempotencyService, database: Database, clock: Clock
) -> None:
    await _completed(service, ["old"])
    clock.now += 101
    await _completed(service, ["new"])  # more than PURGE_INTERVAL_S after the last purge

    assert await _stored_keys(database) == {"new"}


def test_the_fingerprint_reads_a_json_body_by_value() -> None:
    compact = request_fingerprint("POST", "/v1/chat/completions", "", b'{"a":1,"b":[1,2]}')

    assert request_fingerprint("POST", "/v1/chat/completions", "", b'{ "b": [1, 2],\n "a": 1 }') == compact
    assert request_fingerprint("POST", "/v1/chat/completions", "", b'{"a":2,"b":[1,2]}') != compact
    assert request_fingerprint("POST", "/v1/chat/completions", "", b'{"a":1,"b":[2,1]}') != compact
    assert request_fingerprint("POST", "/v1/completions", "", b'{"a":1,"b":[1,2]}') != compact
    assert request_fingerprint("POST", "/v1/chat/completions", "x=1", b'{"a":1,"b":[1,2]}') != compact


def test_the_fingerprint_of_another_body_is_its_bytes() -> None:
    assert request_fingerprint("POST", "/v1/files", "", b"a b") != request_fingerprint("POST", "/v1/files", "", b"a  b")
    assert request_fingerprint("POST", "/v1/files", "", b"\xff") == request_fingerprint(
        "POST", "/v1/files", "", b"\xff"
    )


def test_the_fingerprint_of_a_multipart_body_ignores_its_boundary() -> None:
    def upload(boundary: str, content: str) -> str:
        body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\n{content}\r\n--{boundary}--\r\n'
        content_type = f'multipart/form-data; boundary="{boundary}"'
        return request_fingerprint("POST", "/v1/files", "", body.encode(), content_type)

    assert upload("a1b2c3", '{"x": 1}') == upload("ffee99", '{"x": 1}')
    assert upload("a1b2c3", '{"x": 1}') != upload("a1b2c3", '{"x": 2}')


@pytest.mark.parametrize("piece", [1, 2, 5, 7, 64])
def test_a_multipart_body_fed_in_pieces_has_the_fingerprint_of_the_whole(piece: int) -> None:
    boundary = "----b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        f"{'x' * 40}\r\n--{boundary}--\r\n"
    ).encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    fingerprint = RequestFingerprint("POST", "/v1/files", "", content_type)
    for start in range(0, len(body), piece):
        fingerprint.update(body[start : start + piece])

    assert fingerprint.hexdigest() == request_fingerprint("POST", "/v1/files", "", body, content_type)
