"""One real `portico serve` (the default config: the embedded SmolLM2-135M, auth off on loopback) that every
client-library test talks to, and an environment in which no library reaches beyond loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.system.servers import serving

MODEL = "smollm2"
API_KEY = "not-needed-locally"  # auth is off on loopback; the libraries insist on some key


@pytest.fixture(scope="session")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server's OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
    with serving(tmp_path_factory.mktemp("clients")) as url:
        yield f"{url}/v1"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key for libraries that read one from the environment, and no tracing or telemetry to any service."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    for name in ("LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_API_KEY", "LANGSMITH_API_KEY"):
        monkeypatch.delenv(name, raising=False)
