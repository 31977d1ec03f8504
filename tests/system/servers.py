"""Starting `portico serve` as a real process: a free port, and waiting until it is ready."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.databases import POSTGRES_URL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(process: subprocess.Popen[bytes], url: str, *, timeout_s: float = 120) -> None:
    """Poll ``url``/readyz until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, f"portico serve exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "portico serve did not become ready"
        time.sleep(0.1)


PORTICO = Path(sys.executable).parent / "portico"


def portico_env(work: Path, **settings: str) -> dict[str, str]:
    """The environment of a `portico` process in ``work``: none of the caller's PORTICO_* variables, its
    config file ``work/portico.toml`` and data directory ``work/data``, then ``settings`` (PORTICO_... names)."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("PORTICO_")}
    return inherited | {"PORTICO_CONFIG": str(work / "portico.toml"), "PORTICO_DATA_DIR": str(work / "data")} | settings


def shared_env(work: Path, schema: str, **settings: str) -> dict[str, str]:
    """``portico_env`` on the shared PostgreSQL test database (in ``schema``), with auth on and a server secret
    that every process started with this environment shares."""
    return portico_env(
        work,
        PORTICO_DATABASE_URL=POSTGRES_URL,
        PORTICO_DATABASE_SCHEMA=schema,
        PORTICO_AUTH__ENABLED="true",
        PORTICO_AUTH__SECRET=secrets.token_hex(32),
        **settings,
    )


def stop_all(*processes: subprocess.Popen[bytes]) -> None:
    """SIGTERM to each process still running, then wait for them all (SIGKILL for one that takes over 30 s)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serving(work: Path, *, timeout_s: float = 120) -> Iterator[str]:
    """A `portico serve` in ``work`` (its ``portico.toml``, if any, and ``work/data``; its log in
    ``work/serve.log``) on a free loopback port, until the block ends: yields its root URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (work / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [str(PORTICO), "serve", "--port", str(port)], env=portico_env(work), cwd=work, stdout=log, stderr=log
        )
        try:
            wait_ready(process, url, timeout_s=timeout_s)
            yield url
        finally:
            stop_all(process)
