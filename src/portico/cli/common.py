"""What the commands share: settings loading with readable errors, the console, and running services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from portico.errors import PorticoError
from portico.services.admin import AdminService
from portico.services.control_plane import open_admin
from portico.settings import Settings

console = Console(stderr=True)
out = Console()
T = TypeVar("T")

ConfigOption = Annotated[
    Path | None, typer.Option(exists=True, dir_okay=False, help="A portico.toml to read settings from.")
]
OrganizationOption = Annotated[
    str | None, typer.Option(help="Organization id (default: the first organization, made on first start).")
]


def load_settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return Settings.load(config, **overrides)
    except ValidationError as exc:
        console.print("[red]Invalid settings:[/red]")
        console.print(str(exc), markup=False)  # pydantic's "[type=missing, input_value=…]" is not markup
        raise typer.Exit(2) from exc


def run_admin(config: Path | None, organization: str | None, work: Callable[[AdminService, str], Awaitable[T]]) -> T:
    """Run ``work(admin, organization id)`` against the configured database; errors print as one red line."""
    import asyncio

    settings = load_settings(config)

    async def run() -> T:
        database, admin = await open_admin(settings)
        try:
            organization_id = organization or (await admin.default_organization()).id
            return await work(admin, organization_id)
        finally:
            await database.close()

    try:
        return asyncio.run(run())
    except PorticoError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from exc
