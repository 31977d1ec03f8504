"""``portico chat``: an interactive, streamed chat in the terminal, through the SDK."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console

from portico.cli.common import ConfigOption, load_settings, out
from portico.cli.remote import ApiKeyOption, UrlOption, in_process_server
from portico_client import Portico, PorticoError

HELP = "Type a message and press Enter. /new starts a new conversation, /exit (or Ctrl-D) ends."


def _answer(client: Portico, model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """Stream one answer to the terminal; its text, then a line with tokens, cost, time to first token."""
    started, first = time.perf_counter(), None
    text: list[str] = []
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **params
    )
    with stream:
        for chunk in stream:
            if chunk.choices and (piece := chunk.choices[0].delta.content):
                first = first or time.perf_counter()
                text.append(piece)
                out.print(piece, end="", markup=False, highlight=False)
    out.print()
    usage = stream.usage
    ttft = f"{(first - started) * 1000:.0f} ms" if first else "-"
    if usage is not None:
        cost = f"${usage.cost:.6f}" if usage.cost is not None else "-"
        out.print(
            f"[dim]{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens · {cost} · "
            f"TTFT {ttft} · {stream.request_id}[/dim]"
        )
    return "".join(text)


def _converse(client: Portico, model: str, params: dict[str, Any], console: Console, message: str | None) -> None:
    messages: list[dict[str, Any]] = []
    while True:
        if message is None:
            try:
                line = console.input("[bold cyan]you>[/bold cyan] ").strip()
            except EOFError:
                return
        else:
            line = message
        if line in ("/exit", "/quit"):
            return
        if line == "/new":
            messages = []
            out.print("[dim](new conversation)[/dim]")
            continue
        if not line:
            continue
        messages.append({"role": "user", "content": line})
        try:
            messages.append({"role": "assistant", "content": _answer(client, model, messages, params)})
        except PorticoError as exc:
            messages.pop()
            out.print(f"[red]{exc}[/red]")
        if message is not None:
            return


def chat(
    model: Annotated[str, typer.Option(help="The model to talk to.")] = "smollm2",
    message: Annotated[str | None, typer.Option(help="Send this one message, print the answer, and exit.")] = None,
    temperature: Annotated[float | None, typer.Option(min=0, max=2, help="Sampling temperature.")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Longest answer, in tokens.")] = None,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run Portico inside this command instead of calling a server.")
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    config: ConfigOption = None,
) -> None:
    """Chat with a model in the terminal, answers streamed as they are generated."""
    params = {k: v for k, v in {"temperature": temperature, "max_tokens": max_tokens}.items() if v is not None}
    console = Console()
    if message is None:
        console.print(f"[dim]{HELP}[/dim]")
    if in_process:
        with in_process_server(load_settings(config)) as local, Portico(base_url=local) as client:
            _converse(client, model, params, console, message)
        return
    with Portico(base_url=url, api_key=api_key) as client:
        _converse(client, model, params, console, message)
