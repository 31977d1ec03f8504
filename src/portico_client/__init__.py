"""The Python client of Portico: ``Portico`` (sync) and ``AsyncPortico`` (async).

```python
from portico_client import Portico

client = Portico()  # http://127.0.0.1:8000/v1, key from $PORTICO_API_KEY
answer = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}])
print(answer.choices[0].message.content)
```

It never imports the server (``portico``); docs/sdk.md is its guide.
"""

from portico_client._client import AsyncPortico, Portico
from portico_client._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GatewayTimeoutError,
    InternalServerError,
    MethodNotAllowedError,
    ModelRetiredError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PorticoError,
    RateLimitError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    UpstreamError,
)
from portico_client._streaming import AsyncStream, Stream
from portico_client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncPortico",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GatewayTimeoutError",
    "InternalServerError",
    "MethodNotAllowedError",
    "ModelRetiredError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Portico",
    "PorticoError",
    "RateLimitError",
    "ServiceUnavailableError",
    "Stream",
    "UnsupportedMediaTypeError",
    "UpstreamError",
    "WebhookVerificationError",
    "verify_webhook",
]
