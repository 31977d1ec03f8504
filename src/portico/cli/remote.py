"""What the commands that talk to a running server share: its address and key options, and an in-process server
for ``portico chat --in-process``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
import uvicorn

from portico.settings import Settings

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="The server's API root (default: $PORTICO_BASE_URL, else http://127.0.0.1:8000/v1)."),
]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", help="An API key (default: $PORTICO_API_KEY; none is needed on loopback).")
]


def percentile(values: list[float], fraction: float) -> float:
    """The value at ``fraction`` of the sorted values (nearest rank); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@contextmanager
def in_process_server(settings: Settings) -> Iterator[str]:
    """Portico on a free loopback port in a thread of this process; yields its API root."""
    from portico.app import create_app

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_config=None, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise typer.Exit(1)
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
