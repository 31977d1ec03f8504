"""A private Redis and a private PostgreSQL for fault tests: processes a test may stop, kill and restart.

The shared servers on 6379 and 5432 serve everyone's tests at once, so a test that breaks its database or
Redis on purpose starts its own on a free port:

    with private_redis() as redis:        # redis.url, redis.stop(), redis.start()
        ...
    with private_postgres() as postgres:   # postgres.url (asyncpg), stop(), start(), restart()
        ...

PostgreSQL refuses to run as root, so its cluster lives in a directory owned by ``postgres`` and every command
runs as that user (``runuser``); authentication is ``trust`` on loopback, like the shared server's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from tests.system.servers import free_port

POSTGRES_USER = "postgres"
_START_TIMEOUT_S = 60


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class PrivateRedis:
    """``redis-server`` on ``port`` without persistence: a restart comes back empty, like a lost cache node."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _accepts_connections(self.port):
            assert self._process.poll() is None, f"redis-server on port {self.port} exited"
            assert time.monotonic() < deadline, f"redis-server on port {self.port} did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill it (SIGKILL: an outage, not a shutdown); its port refuses connections at once."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=30)
        self._process = None


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis(free_port())
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


def _postgres_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    assert found, f"no PostgreSQL {name} under /usr/lib/postgresql"
    return str(found[-1])


class PrivatePostgres:
    """A PostgreSQL cluster of its own in ``directory``, database ``postgres``, listening on loopback ``port``."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.url = f"postgresql+asyncpg://{POSTGRES_USER}@127.0.0.1:{port}/postgres"
        self.dsn = f"postgresql://{POSTGRES_USER}@127.0.0.1:{port}/postgres"

    def _run(self, *command: str) -> None:
        as_postgres = ["runuser", "-u", POSTGRES_USER, "--", *command]
        completed = subprocess.run(as_postgres, capture_output=True, text=True, timeout=_START_TIMEOUT_S)
        assert completed.returncode == 0, f"{' '.join(command)} failed:\n{completed.stdout}\n{completed.stderr}"

    def create(self) -> None:
        self._run(_postgres_bin("initdb"), "-D", str(self.directory / "data"), "-A", "trust", "-U", POSTGRES_USER)

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "postgres.log")
        self._run(_postgres_bin("pg_ctl"), action, "-D", str(self.directory / "data"), "-l", log, "-o", options, *extra)

    def start(self) -> None:
        self._ctl("start", "-w")

    def restart(self) -> None:
        """Stop and start again; returns once up."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """Stop with ``-m fast``: open connections are cut and new ones refused, as on a failover."""
        self._ctl("stop", "-m", "fast", "-w")

    def fetch(self, query: str, *arguments: object) -> list[asyncpg.Record]:
        """Run ``query`` on a connection of its own, on a thread of its own (so async tests may call it too)."""

        async def fetch() -> list[asyncpg.Record]:
            connection = await asyncpg.connect(self.dsn)
            try:
                return list(await connection.fetch(query, *arguments))
            finally:
                await connection.close()

        with ThreadPoolExecutor(max_workers=1) as thread:
            return thread.submit(lambda: asyncio.run(fetch())).result()


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    directory = Path(tempfile.mkdtemp(prefix="portico-pg-"))
    shutil.chown(directory, POSTGRES_USER, POSTGRES_USER)
    os.chmod(directory, 0o700)
    postgres = PrivatePostgres(directory, free_port())
    try:
        postgres.create()
        postgres.start()
        yield postgres
    finally:
        try:
            postgres.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
