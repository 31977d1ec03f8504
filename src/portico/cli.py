"""The ``portico`` command. Thin: each command builds settings and calls into the package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console

from portico.observability.logging import configure_logging
from portico.settings import Settings

app = typer.Typer(help="Portico: an OpenAI-compatible AI API server.", no_args_is_help=True)
console = Console(stderr=True)


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
    """Serve the API (and the embedded model) on http://HOST:PORT/v1."""
    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    try:
        settings = Settings.load(config, **overrides)
    except ValidationError as exc:
        console.print(f"[red]Invalid settings:[/red]\n{exc}")
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level)
    console.print(
        f"Portico serving {', '.join(m.alias for m in settings.models)} "
        f"on http://{settings.host}:{settings.port}/v1 (docs at /docs)"
    )
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "loop": "uvloop",
        "http": "httptools",
    }
    if settings.workers == 1:
        from portico.app import create_app

        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return
    settings.export_to_environment()
    uvicorn.run("portico.app:create_app", factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]


def main() -> None:
    app()
