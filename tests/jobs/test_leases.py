"""The rules jobs and batch lines share: what is transient (waited out) and what fails at once, and the backoff; a
job and a batch line treat a per-minute rate limit and an exhausted daily quota or budget the same way."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from portico.errors import (
    BudgetExhausted,
    CircuitOpen,
    ConcurrencyLimited,
    DailyTokensExhausted,
    EngineOverloaded,
    EngineUnavailable,
    GenerationTimeout,
    InvalidRequest,
    PorticoError,
    RequestRateLimited,
    RevokedApiKey,
    StorageUnavailable,
    TokenRateLimited,
    UpstreamError,
    UpstreamRateLimited,
)
from portico.jobs.leases import BACKOFF_CAP_S, MAX_RETRY_AFTER_S, backoff_s, is_transient
from portico.settings import JobsSettings, PricingSettings, Settings
from tests.api.test_batches import CHAT, chat_line, counts, create_batch, result_lines, wait_for
from tests.conftest import asgi_client, auth_settings, bearer, make_key
from tests.jobs.support import parse_sse, wait_for_job

HOURS_TO_MIDNIGHT = 5 * 3600.0


@pytest.mark.parametrize(
    "error",
    [
        RequestRateLimited("", retry_after=12),
        TokenRateLimited("", retry_after=40),
        ConcurrencyLimited("", retry_after=1),
        UpstreamRateLimited("", retry_after=30),
        UpstreamRateLimited("", retry_after=None),
        EngineOverloaded("", retry_after=3),
        EngineUnavailable(""),
        CircuitOpen("", retry_after=30),
        StorageUnavailable(""),
    ],
    ids=lambda error: error.code,
)
def test_refusals_that_pass_soon_are_waited_out(error: PorticoError) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        DailyTokensExhausted("", retry_after=HOURS_TO_MIDNIGHT),
        DailyTokensExhausted("", retry_after=30),  # a minute before midnight: still the daily quota
        BudgetExhausted("", retry_after=HOURS_TO_MIDNIGHT),
        UpstreamRateLimited("", retry_after=MAX_RETRY_AFTER_S + 1),  # an upstream's quota that resets in hours
        InvalidRequest(""),
        RevokedApiKey(),
        GenerationTimeout(""),  # retryable, but the work ran: not a refusal
        UpstreamError(""),
    ],
    ids=lambda error: f"{error.code}-{error.retry_after}",
)
def test_limits_that_reset_far_later_and_real_failures_fail_at_once(error: PorticoError) -> None:
    assert not is_transient(error)


def test_backoff_waits_the_retry_after_in_full_plus_a_little_jitter() -> None:
    waits = [backoff_s(1, retry_after=20.0) for _ in range(200)]
    assert min(waits) >= 20.0 and max(waits) <= 25.0
    assert len(set(waits)) > 100  # spread: work turned away together does not come back together
    assert backoff_s(1, retry_after=0.0) >= 0.05


def test_backoff_without_retry_after_is_full_jitter_doubling_up_to_the_cap() -> None:
    for failures, ceiling in [(1, 1.0), (2, 2.0), (4, 8.0), (10, BACKOFF_CAP_S), (5000, BACKOFF_CAP_S)]:
        waits = [backoff_s(failures) for _ in range(200)]
        assert min(waits) >= 0.0 and max(waits) <= ceiling
        assert min(waits) < ceiling / 2 < max(waits)  # full jitter: anywhere from 0 to the ceiling
    assert max(backoff_s(30, base_s=2.0, cap_s=3600.0) for _ in range(50)) <= 3600.0


# -- a job and a batch line, side by side --------------------------------------------------------------------
def _settings() -> Settings:
    settings = auth_settings(jobs=JobsSettings(poll_interval_s=0.05, lease_s=1.5, batch_concurrency=2))
    settings.models[0].pricing = PricingSettings(input_per_million=1000.0, output_per_million=2000.0)
    return settings


def _body(words: str) -> dict[str, Any]:
    """A chat body of three words: each one different (no cache hit), each the same number of prompt tokens."""
    body: dict[str, Any] = chat_line(None, words)["body"]
    return body


async def _job_and_line(client: httpx.AsyncClient, key: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job and a one-line batch, submitted together and followed to their ends."""
    job_id = (
        await client.post(
            "/v1/jobs", json={"type": "chat.completion", "request": _body("job three words")}, headers=key
        )
    ).json()["id"]
    batch = await create_batch(client, [chat_line("line", "line three words")], headers=key)
    job, batch = await asyncio.gather(
        wait_for_job(client, job_id, headers=key, timeout_s=30), wait_for(client, batch["id"], headers=key, timeout=30)
    )
    return job, batch


async def _requeue_reasons(client: httpx.AsyncClient, job_id: str, key: dict[str, str]) -> list[str]:
    events = parse_sse((await client.get(f"/v1/jobs/{job_id}/events", headers=key)).text)
    return [event.data["reason"] for event in events if event.event == "queued" and "reason" in event.data]


async def test_a_per_minute_limit_is_waited_out_by_a_job_and_a_batch_line_alike() -> None:
    async with asgi_client(_settings()) as (client, app):
        # One request every 3 s: the sync request takes the only one, so the job and the line are turned away.
        key = bearer(await make_key(app, limits={"requests_per_minute": 20, "request_burst": 1}))
        taken_at = time.time()
        assert (await client.post(CHAT, json=_body("sync three words"), headers=key)).status_code == 200
        job, batch = await _job_and_line(client, key)
        reasons = await _requeue_reasons(client, job["id"], key)
        lines = await result_lines(client, batch["output_file_id"], key)

    assert job["status"] == "succeeded" and job["error"] is None
    assert reasons and set(reasons) == {"requests_per_minute"}  # it waited in the queue
    assert (batch["status"], counts(batch)) == ("completed", (1, 1, 0))
    assert [(line["custom_id"], line["response"]["status_code"]) for line in lines] == [("line", 200)]
    # Neither ran before the limit let it (3 s after the sync request), and neither failed meanwhile.
    assert job["finished_at"] >= int(taken_at) + 2 and batch["completed_at"] >= int(taken_at) + 2


@pytest.mark.parametrize("code", ["tokens_per_day", "budget"])
async def test_an_exhausted_daily_quota_fails_a_job_and_a_batch_line_alike_with_its_code(code: str) -> None:
    async with asgi_client(_settings()) as (client, app):
        body = _body("measure three words")
        measured = await client.post(CHAT, json=body, headers=bearer(await make_key(app)))  # an unlimited key
        prompt_tokens, max_tokens = measured.json()["usage"]["prompt_tokens"], body["max_tokens"]
        # Room for exactly one request's reservation (prices: 1000 and 2000 USD per million tokens): after the sync
        # request, the day's quota is used up.
        limits: dict[str, Any] = (
            {"tokens_per_day": prompt_tokens + max_tokens}
            if code == "tokens_per_day"
            else {"budget_per_day_usd": (prompt_tokens * 1000 + max_tokens * 2000 + 1) / 1e6}
        )
        key = bearer(await make_key(app, limits=limits))
        assert (await client.post(CHAT, json=_body("sync three words"), headers=key)).status_code == 200
        refused = await client.post(CHAT, json=_body("again three words"), headers=key)
        job, batch = await _job_and_line(client, key)
        [line] = await result_lines(client, batch["error_file_id"], key)

    assert (refused.status_code, refused.json()["error"]["code"]) == (429, code)
    assert job["status"] == "failed"
    assert (job["error"]["error"]["code"], job["error"]["error"]["retryable"]) == (code, False)
    assert (batch["status"], counts(batch)) == ("completed", (1, 0, 1))
    assert (line["custom_id"], line["error"]["code"], line["response"]["status_code"]) == ("line", code, 429)
    assert line["response"]["body"]["error"]["code"] == code
