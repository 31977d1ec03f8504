"""The uvicorn server ``portico serve`` runs: uvicorn's own, made to announce a shutdown when it begins.

On SIGTERM uvicorn stops accepting, waits up to ``timeout_graceful_shutdown`` for the open connections to
finish, and only then sends the app the lifespan ``shutdown`` event. An open stream would hold that wait for
the whole timeout, and a running job would not be handed back before it. uvicorn has no hook at the start of
its shutdown, so this subclass adds one: it sets the event the app's lifespan put in the lifespan state
(``SHUTDOWN_STATE``), then lets uvicorn shut down as usual. The app ends its streams and hands its jobs back
at once, while the other requests in flight finish.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import uvicorn

from portico.app import SHUTDOWN_STATE

# uvicorn's exit status when the app failed to start.
STARTUP_FAILURE = 3


class GracefulServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        shutting_down: asyncio.Event | None = self.lifespan.state.get(SHUTDOWN_STATE)
        if shutting_down is not None:
            shutting_down.set()
        await super().shutdown(sockets)


def run(app: Any, **options: Any) -> None:
    """Serve ``app`` in this process until SIGTERM or Ctrl-C (what ``uvicorn.run`` does for one worker)."""
    server = GracefulServer(uvicorn.Config(app, **options))
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
