"""`portico serve` in front of two upstream processes; one is killed with SIGKILL mid-traffic. Requests fail
over to the other with no 5xx to any client; the dead one's circuit opens, half-opens after its cooldown, and
closes when the upstream comes back on its port and a probe succeeds."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.system.servers import PORTICO, free_port, portico_env, stop_all, wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"model": "gpt-up", "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 20}
COOLDOWN_S = 2.0
CONFIG = """
[[models]]
alias = "gpt-up"
snapshot = "gpt-up-2025-01-01"
engine = "upstream"

[models.routing]
retries = 2
backoff_s = 0.01
max_backoff_s = 0.05
breaker_failures = 3
breaker_cooldown_s = {cooldown}

[[models.upstream]]
name = "a"
base_url = "http://127.0.0.1:{a}/v1"
timeout_s = 5

[[models.upstream]]
name = "b"
base_url = "http://127.0.0.1:{b}/v1"
timeout_s = 5
"""


def _mock(port: int) -> subprocess.Popen[bytes]:
    """A mock upstream in its own process (tests/upstream_mock.py), once it accepts connections."""
    process = subprocess.Popen([sys.executable, "-m", "tests.upstream_mock", str(port)], cwd=ROOT)
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, "the mock upstream exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            assert time.monotonic() < deadline, "the mock upstream did not start"
            time.sleep(0.05)


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    yield free_port(), free_port()


async def _circuit(http: httpx.AsyncClient, name: str) -> str:
    state: str = (await http.get("/readyz")).json()["checks"][f"upstream:{name}"]
    return state


async def _until_circuit(http: httpx.AsyncClient, name: str, state: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while (seen := await _circuit(http, name)) != state:
        assert time.monotonic() < deadline, f"circuit of {name} stayed {seen}, never {state}"
        await asyncio.sleep(0.05)


async def test_killing_one_upstream_mid_traffic(tmp_path: Path, ports: tuple[int, int]) -> None:
    port_a, port_b = ports
    (tmp_path / "portico.toml").write_text(CONFIG.format(a=port_a, b=port_b, cooldown=COOLDOWN_S))
    mock_a, mock_b = _mock(port_a), _mock(port_b)
    port = free_port()
    server = subprocess.Popen([PORTICO, "serve", "--port", str(port)], env=portico_env(tmp_path))
    url = f"http://127.0.0.1:{port}"
    statuses: Counter[int] = Counter()
    served: list[tuple[float, str]] = []
    try:
        wait_ready(server, url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            stop = asyncio.Event()

            async def client() -> None:
                while not stop.is_set():
                    response = await http.post("/v1/chat/completions", json=CHAT)
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        served.append((time.monotonic(), response.headers["x-served-by"]))

            clients = [asyncio.create_task(client()) for _ in range(8)]
            await asyncio.sleep(1.5)
            mock_a.send_signal(signal.SIGKILL)  # mid-traffic: some requests to it are in flight
            mock_a.wait()
            killed = time.monotonic()
            await _until_circuit(http, "a", "open")
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*clients)

            assert set(statuses) == {200}, statuses  # every request answered, none with a 5xx
            before = Counter(name for at, name in served if at < killed)
            assert before["a"] > 10 and before["b"] > 10, before  # both served while both were up
            assert {name for at, name in served if at > killed + 0.5} == {"b"}

            # Without traffic the circuit half-opens after its cooldown; the upstream comes back on its port.
            await _until_circuit(http, "a", "half_open", timeout_s=COOLDOWN_S + 5)
            mock_a = _mock(port_a)
            back: Counter[str] = Counter()
            for _ in range(10):
                response = await http.post("/v1/chat/completions", json={**CHAT, "stream": True})
                assert response.status_code == 200 and "[DONE]" in response.text
                back[response.headers["x-served-by"]] += 1
            assert await _circuit(http, "a") == "closed"
            assert back["a"] >= 3, back  # the probe succeeded and it takes its share again
    finally:
        stop_all(server, mock_a, mock_b)
