"""``portico config reference``: the settings reference, generated from the Settings model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from portico.cli.common import console
from portico.settings_reference import BEGIN, END, reference

app = typer.Typer(help="Inspect Portico's settings.", no_args_is_help=True)


@app.command("reference")
def reference_(
    write: Annotated[
        Path | None,
        typer.Option(help="Replace the reference between its markers in this file (e.g. docs/configuration.md)."),
    ] = None,
) -> None:
    """Print every setting with its environment variable, default and meaning (markdown)."""
    generated = reference()
    if write is None:
        typer.echo(generated)
        return
    text = write.read_text()
    if BEGIN not in text or END not in text:
        raise typer.BadParameter(f"{write} has no settings reference markers", param_hint="--write")
    write.write_text(text[: text.index(BEGIN)] + generated + text[text.index(END) + len(END) :])
    console.print(f"Updated the settings reference in {write}.")
