"""``portico projects``: the projects keys and usage belong to."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from portico.cli.common import ConfigOption, OrganizationOption, out, run_admin
from portico.services.admin import AdminService
from portico.storage.models import Project
from portico.storage.paging import Page

app = typer.Typer(help="Create and list projects.", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="The project's name.")],
    organization: OrganizationOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a project; prints its id."""

    async def work(admin: AdminService, organization_id: str) -> Project:
        return await admin.create_project(organization_id, name)

    project = run_admin(config, organization, work)
    out.print(project.id)


@app.command("list")
def list_(organization: OrganizationOption = None, config: ConfigOption = None) -> None:
    """List the organization's projects."""

    async def work(admin: AdminService, organization_id: str) -> Page[Project]:
        return await admin.list_projects(organization_id, limit=100, after=None)

    table = Table("id", "name", "status")
    for project in run_admin(config, organization, work).items:
        table.add_row(project.id, project.name, "archived" if project.archived_at else "active")
    out.print(table)
