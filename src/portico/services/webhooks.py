"""Webhook signing the Standard Webhooks way (https://www.standardwebhooks.com/), the projects' secrets, and
outbox rows.

A message is signed as ``v1,<base64 HMAC-SHA256("{webhook-id}.{webhook-timestamp}.{body}")>`` with the key
inside the project's secret ``whsec_<base64 key>``. ``sign`` and ``verify`` use only the standard library, so a
receiver (or the SDK) can copy them as they are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from portico.constants import (
    HEADER_WEBHOOK_ID,
    HEADER_WEBHOOK_SIGNATURE,
    HEADER_WEBHOOK_TIMESTAMP,
    PREFIX_WEBHOOK,
    PREFIX_WEBHOOK_SECRET,
    new_id,
)
from portico.storage import webhooks as store
from portico.storage.database import Database
from portico.storage.resources import WebhookDelivery

SECRET_BYTES = 32
# How far a message's timestamp may be from the receiver's clock (Standard Webhooks' suggested default).
TOLERANCE_S = 300


class InvalidSignature(ValueError):
    """The message was not signed with this secret, or its timestamp is too far from now (a replay)."""


def new_secret() -> str:
    return PREFIX_WEBHOOK_SECRET + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX_WEBHOOK_SECRET))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value for this message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        HEADER_WEBHOOK_ID: message_id,
        HEADER_WEBHOOK_TIMESTAMP: str(timestamp),
        HEADER_WEBHOOK_SIGNATURE: sign(secret, message_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = TOLERANCE_S, now: float | None = None
) -> None:
    """Raise ``InvalidSignature`` unless ``body`` with these headers was signed with ``secret`` within
    ``tolerance_s`` of ``now``. ``headers`` is looked up lower-case (``webhook-id``, ...)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id = lowered[HEADER_WEBHOOK_ID]
        timestamp = int(lowered[HEADER_WEBHOOK_TIMESTAMP])
        signatures = lowered[HEADER_WEBHOOK_SIGNATURE]
    except (KeyError, ValueError) as exc:
        raise InvalidSignature("missing or malformed webhook-id, webhook-timestamp or webhook-signature") from exc
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        raise InvalidSignature("the webhook-timestamp is too far from now")
    expected = sign(secret, message_id, timestamp, body)
    # Several space-separated signatures may be sent (during a secret's rotation); one match is enough.
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures.split()):
        raise InvalidSignature("no signature matches")


def delivery(project_id: str, url: str, event_type: str, data: dict[str, Any], now: float) -> WebhookDelivery:
    """An outbox row: add it in the transaction that makes the state it announces."""
    payload = {"type": event_type, "timestamp": datetime.fromtimestamp(now, UTC).isoformat(), "data": data}
    return WebhookDelivery(
        id=new_id(PREFIX_WEBHOOK),
        project_id=project_id,
        url=url,
        payload=payload,
        attempts=0,
        next_attempt_at=now,
        created_at=int(now),
    )


class WebhookService:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def secret(self, project_id: str) -> str:
        """The project's signing secret, made on first use (by this call or by the first delivery)."""
        async with self._database.session() as session:
            secret = await store.project_secret(session, project_id, new_secret(), int(time.time()))
            await session.commit()
        return secret
