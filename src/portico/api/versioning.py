"""Deprecation headers for a response whose request named a deprecated model snapshot (docs/versioning.md).

``Deprecation: @<unix seconds>`` (RFC 9745), ``Sunset: <HTTP-date>`` (RFC 8594), and, when a replacement is
configured, ``Link: </v1/models/<replacement>>; rel="successor-version"`` (RFC 8288) plus
``X-Model-Replacement: <replacement>`` for clients that do not parse Link.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import date
from email.utils import formatdate

from portico.constants import HEADER_DEPRECATION, HEADER_LINK, HEADER_MODEL_REPLACEMENT, HEADER_SUNSET
from portico.engines.versions import ModelVersion


def unix_seconds(day: date) -> int:
    """Midnight UTC of ``day``: the instant a date in settings stands for."""
    return calendar.timegm(day.timetuple())


def deprecation_headers(named: Iterable[ModelVersion]) -> list[tuple[str, str]]:
    """The headers for the first named snapshot with an announced end; none if no such snapshot was named."""
    version = next((v for v in named if v.deprecated is not None or v.sunset is not None), None)
    if version is None:
        return []
    headers: list[tuple[str, str]] = []
    if version.deprecated is not None:
        headers.append((HEADER_DEPRECATION, f"@{unix_seconds(version.deprecated)}"))
    if version.sunset is not None:
        headers.append((HEADER_SUNSET, formatdate(unix_seconds(version.sunset), usegmt=True)))
    if version.replacement is not None:
        headers.append((HEADER_LINK, f'</v1/models/{version.replacement}>; rel="successor-version"'))
        headers.append((HEADER_MODEL_REPLACEMENT, version.replacement))
    return headers
