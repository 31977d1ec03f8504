"""``verify_webhook`` on a webhook a real Portico delivered for a job, with the secret the client reads: the real
message passes; a changed body, a changed id, another secret or a timestamp past the tolerance are refused."""

from __future__ import annotations

import base64

import pytest

from portico_client import AsyncPortico, WebhookVerificationError, verify_webhook
from tests.conftest import ECHO_ALIAS
from tests.jobs.support import Delivery, WebhookReceiver, job_settings, wait_for_deliveries
from tests.portico_client.support import portico_server


async def _delivered_webhook() -> tuple[str, Delivery]:
    """A job's webhook as the receiver got it, and the project's secret as the client reads it."""
    settings = job_settings()
    request = {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": "ping"}]}
    with (
        WebhookReceiver().serving() as receiver,
        portico_server(jobs=settings.jobs, webhooks=settings.webhooks) as (
            server,
            key,
        ),
    ):
        async with AsyncPortico(base_url=f"{server.url}/v1", api_key=key) as client:
            secret = await client.webhooks.secret()
            job = await client.jobs.create(type="chat.completion", request=request, webhook_url=receiver.url)
            (delivery,) = await wait_for_deliveries(receiver, 1)
    assert delivery.payload["data"]["id"] == job.id
    return secret, delivery


async def test_a_delivered_webhook_verifies_and_any_change_is_refused() -> None:
    secret, delivery = await _delivered_webhook()
    headers, body = delivery.headers, delivery.body
    timestamp = int(headers["webhook-timestamp"])
    other_secret = "whsec_" + base64.b64encode(b"0" * 32).decode()

    verify_webhook(secret, headers, body)
    verify_webhook(secret, {name.upper(): value for name, value in headers.items()}, body)  # any header case
    verify_webhook(secret, headers, body, now=timestamp + 299)
    with pytest.raises(WebhookVerificationError, match="No signature matches"):
        verify_webhook(secret, headers, body.replace(b"succeeded", b"failed"))
    with pytest.raises(WebhookVerificationError, match="No signature matches"):
        verify_webhook(secret, {**headers, "webhook-id": "msg_other"}, body)
    with pytest.raises(WebhookVerificationError, match="No signature matches"):
        verify_webhook(other_secret, headers, body)
    with pytest.raises(WebhookVerificationError, match="possible replay"):
        verify_webhook(secret, headers, body, now=timestamp + 301)
    with pytest.raises(WebhookVerificationError, match="Missing or malformed"):
        verify_webhook(secret, {"webhook-id": headers["webhook-id"]}, body)
