"""Model files that ship inside PyPI packages, found through package metadata (the package is never imported)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path

from portico.errors import EngineError


def packaged_file(package: str, matches: Callable[[str], bool], what: str) -> Path:
    """The first file of the installed distribution ``package`` whose name ``matches`` (``what`` names it in errors)."""
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise EngineError(
            f"{what} ships in the '{package}' package, which is not installed; run ./scripts/install."
        ) from exc
    for file in distribution.files or []:
        if matches(file.name):
            return Path(str(distribution.locate_file(file)))
    raise EngineError(f"No {what} found inside the installed '{package}' package.")
