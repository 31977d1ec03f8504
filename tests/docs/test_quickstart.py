"""The docs' runnable samples, run for real: `portico serve` with the default models (the bundled SmolLM2 and
all-MiniLM-L6-v2), then every block marked `<!-- run: ... -->` in the docs, as a newcomer would paste it, against
that server. A block passes when it exits 0 and prints what its marker expects (`expect "..."`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.servers import PORTICO, free_port, portico_env, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.model]

ROOT = Path(__file__).resolve().parents[2]
RUNNABLE = re.compile(
    r'^<!-- run(?:: (?:expect "(?P<expect>[^"]*)"|sdk))? -->\n```(?P<lang>\w+)\n(?P<code>.*?)^```', re.M | re.S
)
DOCUMENTED = "127.0.0.1:8000"  # the address the docs use


def runnable() -> list[tuple[str, str, str, str]]:
    blocks = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        text = path.read_text()
        for match in RUNNABLE.finditer(text):
            where = f"{path.name}:{text.count(chr(10), 0, match.start()) + 2}"
            blocks.append((where, match["lang"], match["code"], match["expect"] or ""))
    return blocks


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("docs")
    (work / "portico.toml").write_text("")  # the defaults, as after the two quickstart commands
    port = free_port()
    process = subprocess.Popen([PORTICO, "serve", "--port", str(port)], env=portico_env(work))
    try:
        wait_ready(process, f"http://127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_quickstart_has_each_client() -> None:
    quickstart = [block for block in runnable() if block[0].startswith("quickstart.md")]
    assert [lang for _, lang, _, _ in quickstart] == ["bash", "python", "python"]
    assert "from openai import" in quickstart[1][2] and "from portico_client import" in quickstart[2][2]


@pytest.mark.parametrize(("where", "lang", "code", "expect"), runnable(), ids=lambda value: str(value)[:30])
def test_runnable_sample(server: str, where: str, lang: str, code: str, expect: str) -> None:
    code = code.replace(DOCUMENTED, server)
    command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    environment = {
        **os.environ,
        "PORTICO_BASE_URL": f"http://{server}/v1",
        "PORTICO_API_KEY": "unused-on-loopback",
        "PORTICO_MODEL": "smollm2",
    }
    ran = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment, check=False)
    assert ran.returncode == 0, f"{where} failed:\n{ran.stdout}\n{ran.stderr}"
    assert expect in ran.stdout, f"{where} printed:\n{ran.stdout}"
