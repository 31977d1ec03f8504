"""What the job tests share: settings, waiting for a job, reading its SSE events, and a real webhook receiver."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from portico.settings import JobsSettings, PricingSettings, Settings, WebhookSettings
from tests.conftest import ECHO_ALIAS, echo_settings

FINISHED = {"succeeded", "failed", "cancelled", "expired"}
WORDS = " ".join(f"w{i}" for i in range(40))  # the echo engine answers with these 40 words


def chat_request(content: str = "one two three four five six", **fields: Any) -> dict[str, Any]:
    return {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": content}], **fields}


def chat_job(content: str = "one two three four five six", **fields: Any) -> dict[str, Any]:
    return {"type": "chat.completion", "request": chat_request(content), **fields}


def job_settings(
    *,
    tokens_per_second: float = 0,
    worker: bool = True,
    database_url: str | None = None,
    database_schema: str | None = None,
    **overrides: Any,
) -> Settings:
    """Echo settings with prices (so usage has a cost), fast polling and quick webhook retries."""
    jobs = {"poll_interval_s": 0.05, "in_process_worker": worker, **overrides.pop("jobs", {})}
    settings = echo_settings(
        tokens_per_second=tokens_per_second,
        jobs=JobsSettings(**jobs),
        webhooks=WebhookSettings(backoff_s=0.05, timeout_s=5),
        database_url=database_url,
        database_schema=database_schema,
        **overrides,
    )
    settings.models[0].pricing = PricingSettings(input_per_million=1000.0, output_per_million=2000.0)
    return settings


async def wait_for_job(
    client: httpx.AsyncClient,
    job_id: str,
    *,
    until: set[str] = FINISHED,
    headers: dict[str, str] | None = None,
    timeout_s: float = 20,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in until:
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}"
        await asyncio.sleep(0.02)


async def wait_for_progress(client: httpx.AsyncClient, job_id: str, tokens: int) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        job: dict[str, Any] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["progress"]["completion_tokens"] >= tokens:
            return job
        assert job["status"] in {"queued", "running"}, job
        assert time.monotonic() < deadline, "the job made no progress"
        await asyncio.sleep(0.02)


@dataclass
class SSEEvent:
    id: int | None
    event: str | None
    data: dict[str, Any]


def parse_sse(text: str) -> list[SSEEvent]:
    """The events of an SSE body (comments dropped)."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if "data" in fields:
            event_id = int(fields["id"]) if "id" in fields else None
            events.append(SSEEvent(event_id, fields.get("event"), json.loads(fields["data"])))
    return events


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


@dataclass
class WebhookReceiver:
    """A real HTTP server on loopback that records the webhooks it gets; the first ``fail_first`` get a 500."""

    fail_first: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    answered: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    @contextmanager
    def serving(self) -> Iterator[WebhookReceiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.deliveries.append(Delivery({k.lower(): v for k, v in self.headers.items()}, body))
                receiver.answered += 1
                self.send_response(500 if receiver.answered <= receiver.fail_first else 204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


async def wait_for_deliveries(receiver: WebhookReceiver, count: int, timeout_s: float = 20) -> list[Delivery]:
    deadline = time.monotonic() + timeout_s
    while len(receiver.deliveries) < count:
        assert time.monotonic() < deadline, f"{len(receiver.deliveries)} of {count} webhooks arrived"
        await asyncio.sleep(0.02)
    return receiver.deliveries
