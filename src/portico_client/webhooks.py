"""Verifying Portico's webhooks, signed the Standard Webhooks way (https://www.standardwebhooks.com/).

The signature is ``v1,`` + base64 of HMAC-SHA256 over ``"{webhook-id}.{webhook-timestamp}.{raw body}"``, keyed
with the base64-decoded part of the project's secret after ``whsec_`` (``client.webhooks.secret()``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
# How far a message's timestamp may be from this clock: an older one may be a replay.
TOLERANCE_S = 300


class WebhookVerificationError(ValueError):
    """The message was not signed with this secret, or its timestamp is too far from now (a replay)."""


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: float = TOLERANCE_S, now: float | None = None
) -> None:
    """Raise ``WebhookVerificationError`` unless ``body`` (the raw bytes, before any JSON parsing) with these
    headers was signed with ``secret`` within ``tolerance_s`` of now. Header names may be in any case."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp = int(lowered["webhook-timestamp"])
        signatures = lowered["webhook-signature"]
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (KeyError, ValueError, binascii.Error) as exc:
        raise WebhookVerificationError(
            "Missing or malformed webhook-id, webhook-timestamp or webhook-signature header, or a secret that is "
            "not 'whsec_<base64>'."
        ) from exc
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        raise WebhookVerificationError(
            f"The webhook-timestamp is {abs(now - timestamp):.0f} s from this clock (more than {tolerance_s:.0f} s): "
            "refused as a possible replay. Check the receiver's clock if this repeats."
        )
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    # Several space-separated signatures may come (during a secret's rotation); one match is enough.
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures.split()):
        raise WebhookVerificationError("No signature matches: the body or headers were changed, or the secret differs.")
