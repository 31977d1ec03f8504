"""``portico projects``: the projects keys and usage belong to, and their content policies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from portico.cli.common import ConfigOption, OrganizationOption, console, out, run_admin
from portico.safety.policy import BLOCKABLE, DEFAULT_MODERATION_MODEL, DEFAULT_THRESHOLD, Category, ContentPolicy
from portico.services.admin import AdminService
from portico.storage.models import Project
from portico.storage.paging import Page

app = typer.Typer(help="Create and list projects; set their content policies.", no_args_is_help=True)


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


policy_app = typer.Typer(
    help="A project's own content policy: it wins over the default of its keys' tiers.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")

ProjectId = Annotated[str, typer.Argument(help="The project's id (proj_...) or name.")]


@dataclass(frozen=True, slots=True)
class Blocked:
    category: Category
    threshold: float


def _blocked(value: str) -> Blocked:
    """``hate=0.4`` or ``hate`` (at the default threshold)."""
    name, _, threshold = value.partition("=")
    try:
        category = Category(name.strip())
    except ValueError:
        names = ", ".join(BLOCKABLE)
        raise typer.BadParameter(f"unknown category '{name}'; categories are: {names}.") from None
    if category not in BLOCKABLE:
        raise typer.BadParameter(f"{category} is not a blocking category; use --injection and --injection-threshold.")
    try:
        score = float(threshold) if threshold else DEFAULT_THRESHOLD
    except ValueError:
        raise typer.BadParameter(f"the threshold of {category} must be a number between 0 and 1.") from None
    if not 0 <= score <= 1:
        raise typer.BadParameter(f"the threshold of {category} must be between 0 and 1, not {threshold}.")
    return Blocked(category, score)


def _print_policy(project: Project) -> None:
    policy = project.content_policy
    out.print_json(policy.model_dump_json() if policy is not None else "null")


@policy_app.command("set")
def set_policy(
    project: ProjectId,
    block: Annotated[
        list[Blocked] | None,
        typer.Option(
            parser=_blocked,
            metavar="CATEGORY[=SCORE]",
            help=f"A category that blocks, at or above SCORE (0-1, default {DEFAULT_THRESHOLD}); repeat it for "
            f"several. Categories: {', '.join(BLOCKABLE)}. None given: every category at {DEFAULT_THRESHOLD}.",
        ),
    ] = None,
    check: Annotated[
        Literal["input", "output", "both"], typer.Option(help="Which side is checked: the input, the output or both.")
    ] = "input",
    on_output: Annotated[
        Literal["stop", "fail"],
        typer.Option(help="Output that trips the filter: stop it there, or fail the request."),
    ] = "stop",
    injection: Annotated[
        Literal["off", "warn", "block"], typer.Option(help="A suspected prompt injection: ignore, warn or refuse.")
    ] = "warn",
    injection_threshold: Annotated[
        float, typer.Option(min=0, max=1, help="The score at or above which input is a suspected injection.")
    ] = DEFAULT_THRESHOLD,
    model: Annotated[
        str, typer.Option(help="The moderation model that scores the text (an alias of the models table).")
    ] = DEFAULT_MODERATION_MODEL,
    organization: OrganizationOption = None,
    config: ConfigOption = None,
) -> None:
    """Set the project's content policy (replacing any it had); prints it. Its keys follow within a second."""
    # No --block: the policy's own default, every category at its default threshold.
    chosen: dict[str, Any] = {"categories": {item.category: item.threshold for item in block}} if block else {}
    policy = ContentPolicy(
        model=model,
        check=check,
        on_output=on_output,
        injection=injection,
        injection_threshold=injection_threshold,
        **chosen,
    )

    async def work(admin: AdminService, organization_id: str) -> Project:
        return await admin.set_content_policy(organization_id, project, policy)

    _print_policy(run_admin(config, organization, work))


@policy_app.command("show")
def show_policy(project: ProjectId, organization: OrganizationOption = None, config: ConfigOption = None) -> None:
    """Print the project's own content policy as JSON (null: none; its keys follow their tier's default)."""

    async def work(admin: AdminService, organization_id: str) -> Project:
        return await admin.get_project(organization_id, project)

    _print_policy(run_admin(config, organization, work))


@policy_app.command("clear")
def clear_policy(project: ProjectId, organization: OrganizationOption = None, config: ConfigOption = None) -> None:
    """Remove the project's own content policy: its keys follow their tier's default, if any."""

    async def work(admin: AdminService, organization_id: str) -> Project:
        return await admin.set_content_policy(organization_id, project, None)

    found = run_admin(config, organization, work)
    console.print(f"Cleared the content policy of {found.id}; its keys follow their tier's default, if any.")
