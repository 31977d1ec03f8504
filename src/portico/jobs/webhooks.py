"""The webhook sender: delivers due rows of the ``webhook_deliveries`` outbox, signed, with one HTTP client.

A row is written in the transaction that makes the state it announces, so a crash loses none. Before each
attempt the sender holds the row (its due time moves past the attempt's timeout), so several workers never
send it at once; the outcome is written after the attempt. A receiver may still see a message twice (a
sender that died after the POST but before writing the outcome): it deduplicates by ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
import orjson

from portico.jobs.context import WorkerContext
from portico.jobs.leases import backoff_s
from portico.services import webhooks
from portico.storage import webhooks as store
from portico.storage.resources import WebhookDelivery

logger = logging.getLogger("portico.webhooks")

# Deliveries taken per round.
BATCH = 32
# Past its timeout, an attempt's hold on its row lasts this much longer (so a slow answer is not sent twice).
HOLD_MARGIN_S = 5.0
MAX_BACKOFF_S = 3600.0  # the longest wait between two attempts
# How often delivered (or given-up) rows older than the jobs' retention are deleted.
PURGE_INTERVAL_S = 3600.0
_ERROR_CHARS = 500
_WARN_EVERY_S = 10.0


class WebhookDispatcher:
    def __init__(self, context: WorkerContext) -> None:
        self._context = context
        self._settings = context.settings.webhooks
        self._poll_s = context.settings.jobs.poll_interval_s
        self._secrets: dict[str, str] = {}  # a project's secret never changes once made
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._warned_at = 0.0
        self._purged_at = 0.0

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._settings.timeout_s, follow_redirects=False)
        self._loop = asyncio.create_task(self._run(), name="webhooks")

    async def close(self) -> None:
        """Stop after the attempts under way (each ends within the timeout); one cut short anyway is sent again
        later, by any worker, once its hold lapses."""
        self._stopping.set()
        if self._loop is not None:
            _, late = await asyncio.wait({self._loop}, timeout=self._settings.timeout_s + 1)
            for task in late:
                task.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            sent = 0
            try:
                sent = await self._send_due()
                await self._purge()
            except Exception as exc:
                if time.monotonic() - self._warned_at >= _WARN_EVERY_S:
                    self._warned_at = time.monotonic()
                    logger.warning("could not send webhooks", exc_info=exc)
            if sent < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._poll_s)

    async def _send_due(self) -> int:
        now = time.time()
        held: list[WebhookDelivery] = []
        async with self._context.database.session() as session:
            for delivery in await store.due_deliveries(session, now, BATCH):
                if await store.hold_delivery(session, delivery, now + self._settings.timeout_s + HOLD_MARGIN_S):
                    held.append(delivery)
            await session.commit()
        outcomes = await asyncio.gather(*(self._attempt(delivery) for delivery in held), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):  # not recorded: the row is due again once its hold lapses
                raise outcome
        return len(held)

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        assert self._client is not None
        body = orjson.dumps(delivery.payload)
        headers = webhooks.signed_headers(await self._secret(delivery.project_id), delivery.id, body)
        error: str | None = None
        try:
            response = await self._client.post(delivery.url, content=body, headers=headers)
            if not response.is_success:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        attempts = delivery.attempts + 1
        now = time.time()
        outcome: dict[str, object] = {"attempts": attempts, "last_error": error}
        if error is None:
            outcome["delivered_at"] = int(now)
        elif attempts >= self._settings.max_attempts:
            outcome["failed_at"] = int(now)
            logger.warning("webhook given up", extra={"webhook_id": delivery.id, "error": error})
        else:
            outcome["next_attempt_at"] = now + backoff_s(attempts, base_s=self._settings.backoff_s, cap_s=MAX_BACKOFF_S)
        async with self._context.database.session() as session:
            await store.record_attempt(session, delivery.id, outcome)
            await session.commit()

    async def _secret(self, project_id: str) -> str:
        if project_id not in self._secrets:
            async with self._context.database.session() as session:
                secret = await store.project_secret(session, project_id, webhooks.new_secret(), int(time.time()))
                await session.commit()
            self._secrets[project_id] = secret
        return self._secrets[project_id]

    async def _purge(self) -> None:
        if time.monotonic() - self._purged_at < PURGE_INTERVAL_S:
            return
        self._purged_at = time.monotonic()
        async with self._context.database.session() as session:
            await store.purge_deliveries(session, int(time.time() - self._context.settings.jobs.retention_s))
            await session.commit()
