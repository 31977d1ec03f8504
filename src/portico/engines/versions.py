"""Model snapshots' lifecycle, and the snapshots the current request named (for its Deprecation headers).

The registry notes every snapshot it resolves; the HTTP layer opens one notebook per request
(``noting_named_versions``) and turns what was noted into response headers. Outside a request (jobs, batches)
nothing is noted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date

from portico.constants import SnapshotStatus
from portico.settings import LifecycleSettings


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One snapshot id and where it is in its life."""

    snapshot: str
    deprecated: date | None = None
    sunset: date | None = None
    replacement: str | None = None
    retired: bool = False

    @classmethod
    def of(cls, snapshot: str, lifecycle: LifecycleSettings, *, retired: bool = False) -> ModelVersion:
        return cls(snapshot, lifecycle.deprecated, lifecycle.sunset, lifecycle.replacement, retired)

    @property
    def status(self) -> SnapshotStatus:
        if self.retired:
            return SnapshotStatus.RETIRED
        return SnapshotStatus.ACTIVE if self.deprecated is None else SnapshotStatus.DEPRECATED


# A list shared by reference: a task started during the request copies the context, not the list, so what it
# notes is still seen by the request.
_named: ContextVar[list[ModelVersion] | None] = ContextVar("portico_named_versions", default=None)


@contextmanager
def noting_named_versions() -> Iterator[list[ModelVersion]]:
    """The snapshots resolved while the block runs, in the order they were named."""
    named: list[ModelVersion] = []
    token = _named.set(named)
    try:
        yield named
    finally:
        _named.reset(token)


def note_named(version: ModelVersion) -> None:
    if (named := _named.get()) is not None:
        named.append(version)
