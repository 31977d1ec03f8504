"""The base of the namespaces: a resource bound to the client that runs its calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from portico_client._client import AsyncPortico, Portico

ClientT = TypeVar("ClientT", bound="Portico | AsyncPortico")


class Resource(Generic[ClientT]):
    def __init__(self, client: ClientT) -> None:
        self._client = client
