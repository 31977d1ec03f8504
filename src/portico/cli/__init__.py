"""The ``portico`` command. Thin: each command builds settings and calls into the package."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from portico.cli import bench, chat, config, db, keys, models, projects, usage, worker
from portico.cli.common import console, load_settings
from portico.observability.logging import configure_logging
from portico.observability.metrics import shared_across_processes
from portico.services.control_plane import FIRST_KEY_HINT, open_admin
from portico.settings import Settings

app = typer.Typer(help="Portico: an OpenAI-compatible AI API server.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Portico: an OpenAI-compatible AI API server."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1; from settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Server processes, each with its own engines (default 1).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="A portico.toml to read settings from.")
    ] = None,
) -> None:
    """Serve the API (and the embedded model) on http://HOST:PORT/v1 until SIGTERM or Ctrl-C.

    On SIGTERM open streams end with a retryable error event, running jobs go back to the queue, and other
    requests in flight get shutdown_timeout_s (30 s) to finish.
    """
    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    settings = load_settings(config, **overrides)
    configure_logging(settings.log_level)
    prepare_database(settings)
    console.print(
        f"Portico serving {', '.join(m.alias for m in settings.models)} "
        f"on http://{settings.host}:{settings.port}/v1 (docs at /docs; auth {'on' if settings.auth_enabled else 'off'})"
    )
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "loop": "uvloop",
        "http": "httptools",
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
    }
    if settings.workers == 1:
        from portico import server
        from portico.app import create_app

        server.run(create_app(settings), **common)
        return
    settings.export_to_environment()
    with shared_across_processes():
        uvicorn.run("portico.app:create_app", factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]


def prepare_database(settings: Settings) -> None:
    """Migrate once here, before any worker starts, and say how to make the first key if none exists."""

    async def prepare() -> bool:
        database, admin = await open_admin(settings)
        try:
            await admin.default_organization()
            return await admin.has_keys()
        finally:
            await database.close()

    has_keys = asyncio.run(prepare())
    if settings.auth_enabled and not has_keys and settings.admin_key is None:
        console.print(f"[yellow]{FIRST_KEY_HINT}[/yellow]")
    if settings.workers > 1 and settings.limits.backend == "memory":
        console.print(
            f"[yellow]limits.backend is 'memory': each of the {settings.workers} processes enforces the limits on its "
            "own, so a key gets up to that many times its limits. Set PORTICO_REDIS_URL and "
            "PORTICO_LIMITS__BACKEND=redis for limits that hold across processes.[/yellow]"
        )


app.add_typer(keys.app, name="keys")
app.add_typer(projects.app, name="projects")
app.add_typer(db.app, name="db")
app.add_typer(models.app, name="models")
app.add_typer(config.app, name="config")
app.command(name="worker")(worker.worker)
app.command(name="chat")(chat.chat)
app.command(name="usage")(usage.usage)
app.command(name="bench")(bench.bench)


def main() -> None:
    app()
