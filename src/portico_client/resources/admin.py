"""Usage reports and the admin API's keys (``/v1/admin/keys``, scope ``keys:admin``)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Unpack, overload

from portico_client._base_client import Call, get, parse_model, post
from portico_client._params import KeyCreateParams, KeyListParams, UsageParams
from portico_client.resources._resource import ClientT, Resource
from portico_client.types import ApiKey, CreatedApiKey, Page, UsageReport

if TYPE_CHECKING:
    from portico_client._client import AsyncPortico, Portico


class Usage(Resource[ClientT]):
    @overload
    def get(self: Usage[Portico], **params: Unpack[UsageParams]) -> UsageReport: ...
    @overload
    def get(self: Usage[AsyncPortico], **params: Unpack[UsageParams]) -> Awaitable[UsageReport]: ...
    def get(self, **params: Any) -> Any:
        """Tokens, cost and requests in ``[start, end)``, totalled and bucketed by ``group_by``."""
        return self._client._request(get("usage", UsageReport, params))


class Keys(Resource[ClientT]):
    @overload
    def create(self: Keys[Portico], **params: Unpack[KeyCreateParams]) -> CreatedApiKey: ...
    @overload
    def create(self: Keys[AsyncPortico], **params: Unpack[KeyCreateParams]) -> Awaitable[CreatedApiKey]: ...
    def create(self, **params: Any) -> Any:
        """A new key; its ``value`` is shown only in this answer."""
        return self._client._request(post("admin/keys", params, CreatedApiKey))

    @overload
    def get(self: Keys[Portico], key_id: str) -> ApiKey: ...
    @overload
    def get(self: Keys[AsyncPortico], key_id: str) -> Awaitable[ApiKey]: ...
    def get(self, key_id: str) -> Any:
        return self._client._request(get(f"admin/keys/{key_id}", ApiKey))

    @overload
    def list(self: Keys[Portico], **params: Unpack[KeyListParams]) -> Page[ApiKey]: ...
    @overload
    def list(self: Keys[AsyncPortico], **params: Unpack[KeyListParams]) -> Awaitable[Page[ApiKey]]: ...
    def list(self, **params: Any) -> Any:
        return self._client._request(get("admin/keys", Page[ApiKey], params))

    @overload
    def rotate(self: Keys[Portico], key_id: str, *, grace_period_s: int = 3600) -> CreatedApiKey: ...
    @overload
    def rotate(self: Keys[AsyncPortico], key_id: str, *, grace_period_s: int = 3600) -> Awaitable[CreatedApiKey]: ...
    def rotate(self, key_id: str, *, grace_period_s: int = 3600) -> Any:
        """A new secret; the old one keeps working for ``grace_period_s``."""
        body = {"grace_period_s": grace_period_s}
        return self._client._request(post(f"admin/keys/{key_id}/rotate", body, CreatedApiKey))

    @overload
    def revoke(self: Keys[Portico], key_id: str) -> ApiKey: ...
    @overload
    def revoke(self: Keys[AsyncPortico], key_id: str) -> Awaitable[ApiKey]: ...
    def revoke(self, key_id: str) -> Any:
        """Every server refuses the key within a second."""
        return self._client._request(Call(method="DELETE", path=f"admin/keys/{key_id}", parse=parse_model(ApiKey)))


class Admin(Resource[ClientT]):
    def __init__(self, client: ClientT) -> None:
        super().__init__(client)
        self.keys = Keys(client)
