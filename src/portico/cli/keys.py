"""``portico keys``: create, list, rotate and revoke API keys, straight against the database."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from portico.cli.common import ConfigOption, OrganizationOption, console, out, run_admin
from portico.constants import Scope
from portico.services.admin import AdminService, CreatedKey
from portico.storage.models import ApiKey
from portico.storage.paging import Page

app = typer.Typer(help="Manage API keys (shown once at creation; only a keyed hash is stored).", no_args_is_help=True)

KeyId = Annotated[str, typer.Argument(help="The key's id (key_...).")]


def _print_created(created: CreatedKey, verb: str) -> None:
    console.print(f"{verb} {created.key.id} (project {created.key.project_id}, tier {created.key.tier.name}).")
    console.print("Store this key now; it is not shown again:")
    out.print(created.plaintext, soft_wrap=True)


@app.command()
def create(
    project: Annotated[str, typer.Option(help="Project id or name.")] = "default",
    scopes: Annotated[
        str, typer.Option(help=f"Comma-separated scopes: {', '.join(scope.value for scope in Scope)}.")
    ] = "models:read,inference",
    tier: Annotated[str, typer.Option(help="Tier whose limits apply (free, standard, unlimited, ...).")] = "free",
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")] = "key",
    expires_in_days: Annotated[float | None, typer.Option(min=0, help="Expire after this many days.")] = None,
    organization: OrganizationOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it (once)."""
    expires_at = int(time.time() + expires_in_days * 86400) if expires_in_days is not None else None
    wanted = [scope.strip() for scope in scopes.split(",") if scope.strip()]

    async def work(admin: AdminService, organization_id: str) -> CreatedKey:
        return await admin.create_key(
            organization_id, project=project, name=name, scopes=wanted, tier=tier, expires_at=expires_at
        )

    _print_created(run_admin(config, organization, work), "Created")


@app.command("list")
def list_(
    project: Annotated[str | None, typer.Option(help="Only this project's keys (id).")] = None,
    organization: OrganizationOption = None,
    config: ConfigOption = None,
) -> None:
    """List keys (never their secrets)."""

    async def work(admin: AdminService, organization_id: str) -> Page[ApiKey]:
        return await admin.list_keys(organization_id, project_id=project, limit=100, after=None)

    table = Table("id", "name", "project", "tier", "scopes", "status")
    for key in run_admin(config, organization, work).items:
        status = (
            "revoked" if key.revoked_at else "expired" if key.expires_at and key.expires_at <= time.time() else "active"
        )
        table.add_row(key.id, key.name, key.project_id, key.tier.name, " ".join(key.scopes), status)
    out.print(table)


@app.command()
def rotate(
    key_id: KeyId,
    grace: Annotated[int, typer.Option(min=0, help="Seconds the old secret keeps working.")] = 3600,
    organization: OrganizationOption = None,
    config: ConfigOption = None,
) -> None:
    """Issue a new secret for a key; the old one keeps working for --grace seconds."""

    async def work(admin: AdminService, organization_id: str) -> CreatedKey:
        return await admin.rotate_key(organization_id, key_id, grace_period_s=grace)

    _print_created(run_admin(config, organization, work), "Rotated")


@app.command()
def revoke(key_id: KeyId, organization: OrganizationOption = None, config: ConfigOption = None) -> None:
    """Revoke a key: every server refuses it within a second."""

    async def work(admin: AdminService, organization_id: str) -> ApiKey:
        return await admin.revoke_key(organization_id, key_id)

    key = run_admin(config, organization, work)
    console.print(f"Revoked {key.id}.")
