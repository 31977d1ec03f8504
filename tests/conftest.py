"""Shared fixtures: settings with the echo engine, an in-process ASGI client, and a real uvicorn server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from portico.app import create_app
from portico.constants import Scope
from portico.engines.registry import ModelRegistry
from portico.services.admin import AdminService
from portico.settings import AuthSettings, EchoModel, EchoSettings, Settings
from tests.databases import database, database_schema, database_url  # noqa: F401 (fixtures for every test)

ECHO_ALIAS = "echo"
ECHO_SNAPSHOT = "echo-2026-01-01"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No developer's PORTICO_* variables or portico.toml leak into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("PORTICO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PORTICO_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("PORTICO_DATA_DIR", str(tmp_path / "data"))  # a fresh SQLite database per test


def echo_settings(*, tokens_per_second: float = 0, first_token_ms: float = 0, **overrides: Any) -> Settings:
    model = EchoModel(
        alias=ECHO_ALIAS,
        snapshot=ECHO_SNAPSHOT,
        context_window=overrides.pop("context_window", 256),
        parallel_slots=overrides.pop("parallel_slots", 4),
        echo=EchoSettings(tokens_per_second=tokens_per_second, first_token_latency_ms=first_token_ms),
    )
    return Settings(models=[model], **overrides)


@asynccontextmanager
async def asgi_client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portico.test") as client:
            yield client, app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(echo_settings()) as (http, _):
        yield http


def registry_of(app: FastAPI) -> ModelRegistry:
    registry: ModelRegistry = app.state.runtime.registry
    return registry


class LiveServer:
    """A real uvicorn server on a free loopback port, in a thread, so tests can disconnect for real."""

    def __init__(self, app: ASGIApp, *, lifespan: Literal["on", "off"] = "on", port: int = 0) -> None:
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_config=None, loop="asyncio", http="httptools", lifespan=lifespan)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()


@contextmanager
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings)) as server:
        yield server


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def sse_events(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, in order (comments dropped)."""
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


def auth_settings(**overrides: Any) -> Settings:
    """Echo settings with API keys required (as on any non-loopback bind)."""
    return echo_settings(auth=AuthSettings(enabled=True), **overrides)


async def make_key(
    app: FastAPI,
    *,
    scopes: Sequence[str] = tuple(Scope),
    tier: str = "unlimited",
    project: str = "default",
    limits: dict[str, Any] | None = None,
    organization_id: str | None = None,
    expires_at: int | None = None,
) -> str:
    """A new key through the admin service of a running app; returns the plaintext key."""
    admin: AdminService = app.state.runtime.control.admin
    organization_id = organization_id or app.state.runtime.control.local_principal.organization_id
    created = await admin.create_key(
        organization_id,
        project=project,
        name="test",
        scopes=list(scopes),
        tier=tier,
        limits=limits,
        expires_at=expires_at,
    )
    return created.plaintext


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
