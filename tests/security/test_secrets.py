"""No API key, webhook secret or prompt text in the logs or in an error body, over a run of every feature.

tests/observability/test_logging.py checks the access log of a chat request; this drives everything else a
client can do with a key, a webhook secret and a recognizable prompt — keys created and rotated, chat (also
stored and streamed), completions, tokenize, predict, conversations, a job whose webhook fails once, a batch —
plus the refusals that carry them (a wrong key, a key in the query string, a prompt over the context window, a
prompt in a field of the wrong type, a body cut short), and then scans every error body and error event, and
every line the server logs configured as ``portico serve --log-level debug`` configures it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from portico.auth.keys import parse_key
from portico.constants import Scope
from portico.observability.logging import QUIETED_LIBRARIES, JsonFormatter, configure_logging
from tests.api.test_batches import chat_line, create_batch, wait_for
from tests.conftest import ECHO_ALIAS, asgi_client, bearer, make_key, sse_events
from tests.jobs.support import WebhookReceiver, job_settings, wait_for_deliveries, wait_for_job

PROMPT = "the patient's codeword is heliotrope-vortex-9931"
MARKER = "heliotrope-vortex"


def _chat(content: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}


def _secrets_of(key: str) -> list[str]:
    parts = parse_key(key)
    assert parts is not None
    return [key, parts.secret]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def debug_log() -> Iterator[list[str]]:
    """Every line logged while logging is configured as ``portico serve --log-level debug`` does; the logging
    configuration is restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    touched = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    touched += [logging.getLogger(name) for name in QUIETED_LIBRARIES]
    saved = [(logger, logger.level, logger.handlers[:], logger.propagate, logger.disabled) for logger in touched]
    configure_logging("debug")
    capture = _Lines()
    root.addHandler(capture)
    try:
        yield capture.lines
    finally:
        root.handlers[:], root.level = handlers, level
        for logger, logger_level, logger_handlers, propagate, disabled in saved:
            logger.setLevel(logger_level)
            logger.handlers[:], logger.propagate, logger.disabled = logger_handlers, propagate, disabled


class Recorder:
    """Every response the client receives, read in full."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.responses.append(response)

    def error_texts(self) -> list[str]:
        """Error bodies, and the error events of streams that had started."""
        texts = [response.text for response in self.responses if response.status_code >= 400]
        for response in self.responses:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                texts += [event for event in sse_events(response.text) if event.startswith('{"error"')]
        return texts


async def _use_every_feature(client: httpx.AsyncClient, admin: dict[str, str], receiver: WebhookReceiver) -> list[str]:
    """Requests that carry the prompt and the secrets, as a client would send them; returns the secrets."""
    created = await client.post("/v1/admin/keys", json={"project": "default", "tier": "unlimited"}, headers=admin)
    key_id = created.json()["id"]
    rotated = await client.post(f"/v1/admin/keys/{key_id}/rotate", json={"grace_period_s": 60}, headers=admin)
    webhook_secret = (await client.get("/v1/webhooks/secret", headers=admin)).json()["secret"]

    assert (await client.post("/v1/chat/completions", json=_chat(store=True), headers=admin)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=_chat(stream=True), headers=admin)).status_code == 200
    completion = {"model": ECHO_ALIAS, "prompt": PROMPT, "max_tokens": 8}
    assert (await client.post("/v1/completions", json=completion, headers=admin)).status_code == 200
    assert (await client.post("/v1/tokenize", json={"model": ECHO_ALIAS, "prompt": PROMPT}, headers=admin)).is_success
    predicted = await client.post(f"/v1/models/{ECHO_ALIAS}/predict", json={"input": PROMPT}, headers=admin)
    assert predicted.status_code == 200
    conversation = await client.post("/v1/conversations", json={"model": ECHO_ALIAS, "system": PROMPT}, headers=admin)
    turn = await client.post(
        f"/v1/conversations/{conversation.json()['id']}/messages", json={"content": PROMPT}, headers=admin
    )
    assert turn.status_code == 200, turn.text
    job = await client.post(
        "/v1/jobs", json={"type": "chat.completion", "request": _chat(), "webhook_url": receiver.url}, headers=admin
    )
    await wait_for_job(client, job.json()["id"], headers=admin)
    await wait_for_deliveries(receiver, 2)  # the first delivery fails, the retry arrives
    batch = await create_batch(client, [chat_line("a", words=PROMPT)], headers=admin)
    await wait_for(client, batch["id"], headers=admin)
    return [*_secrets_of(created.json()["value"]), *_secrets_of(rotated.json()["value"]), webhook_secret]


async def _be_refused(client: httpx.AsyncClient, admin: dict[str, str], wrong_key: str) -> None:
    refusals = [
        await client.get("/v1/models", headers=bearer(wrong_key)),
        await client.get("/v1/models", headers={"api-key": wrong_key}),
        await client.get(f"/v1/models?api_key={wrong_key}"),
        await client.post("/v1/chat/completions", json=_chat(PROMPT * 100), headers=admin),
        await client.post("/v1/chat/completions", json=_chat(PROMPT * 100, stream=True), headers=admin),
        await client.post("/v1/chat/completions", json={**_chat(), "max_tokens": PROMPT}, headers=admin),
        await client.post(
            "/v1/chat/completions", json=_chat(messages=[{"role": PROMPT, "content": "x"}]), headers=admin
        ),
        await client.post("/v1/completions", json={"model": ECHO_ALIAS, "prompt": {"text": PROMPT}}, headers=admin),
        await client.post(
            "/v1/chat/completions",
            content=json.dumps(_chat())[:-5].encode(),
            headers={**admin, "content-type": "application/json"},
        ),
        await client.post("/v1/embeddings", json={"model": ECHO_ALIAS, "input": PROMPT}, headers=admin),
    ]
    assert all(400 <= refused.status_code < 500 for refused in refusals), [r.status_code for r in refusals]


async def test_no_secret_or_prompt_in_any_log_line_or_error(debug_log: list[str]) -> None:
    recorder = Recorder()
    wrong_key = "pk-key_000000000000000000000000-" + "5ec7e7" * 10 + "abcd"
    with WebhookReceiver(fail_first=1).serving() as receiver:
        async with asgi_client(job_settings(auth={"enabled": True})) as (client, app):
            client.event_hooks["response"].append(recorder)
            admin_key = await make_key(app, scopes=list(Scope))
            admin = bearer(admin_key)
            secrets = await _use_every_feature(client, admin, receiver)
            await _be_refused(client, admin, wrong_key)
    secrets += [*_secrets_of(admin_key), wrong_key, wrong_key.rsplit("-", 1)[1]]
    errors = recorder.error_texts()

    access_lines = [line for line in debug_log if '"logger":"portico.access"' in line]
    assert len(access_lines) == len(recorder.responses)  # each request of the run was logged
    assert len(errors) >= 10
    for text in debug_log + errors:
        assert MARKER not in text, text
        for secret in secrets:
            assert secret not in text, text
