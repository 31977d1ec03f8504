"""``portico models list``: the models the settings serve, with their snapshots, engines and routes."""

from __future__ import annotations

import typer
from rich.table import Table

from portico.cli.common import ConfigOption, load_settings, out
from portico.settings import ClassifierModel, UpstreamModel

app = typer.Typer(help="The models this configuration serves.", no_args_is_help=True)


@app.command("list")
def list_(config: ConfigOption = None) -> None:
    """One row per model: alias, snapshot, engine, context window, deployments and fallbacks."""
    settings = load_settings(config)
    table = Table("alias", "snapshot", "engine", "context", "deployments", "fallbacks", "older snapshots")
    for model in settings.models:
        deployments = ", ".join(model.deployment_names()) if isinstance(model, UpstreamModel) else "local"
        older = ", ".join(
            f"{previous.id} (retired)" if previous.retired else previous.id for previous in model.previous_snapshots
        )
        window = None if isinstance(model, ClassifierModel) else model.context_window
        context = str(window) if window else "model's"
        table.add_row(
            model.alias, model.snapshot, model.engine, context, deployments, ", ".join(model.fallbacks), older
        )
    out.print(table)
