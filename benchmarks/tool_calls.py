"""Tool calls on the embedded SmolLM2-135M: how often a call parses and validates, and how often ``auto`` calls.

A ``portico serve`` subprocess with the default model answers, one request at a time:

- **forced**: ``tool_choice: "required"`` with one function, over ``--schemas`` generated parameter schemas
  (strings, integers, numbers, booleans, enums, arrays, nested objects, optional properties), each at
  temperature 0 and at temperature 1 with a seed. A call *parses* when its arguments are JSON and *validates*
  when they satisfy the function's schema (jsonschema).
- **auto**: ``tool_choice: "auto"`` with a weather function, on questions it answers (the weather somewhere)
  and questions it does not (arithmetic, greetings), at temperature 0.7 with seeds. The table shows how
  often the model chose to call, and that every call it made validated.

Run from the repository root (about two minutes on two cores):

    .venv/bin/python benchmarks/tool_calls.py --markdown
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema

sys.path.insert(0, str(Path(__file__).parent))
from processes import free_port, stop, wait_until_ready

PORTICO = Path(sys.executable).with_name("portico")
MODEL = "smollm2"
PROPERTIES: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "string", "enum": ["low", "medium", "high"]},
    {"type": "array", "items": {"type": "string"}},
    {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]},
    {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
]
NAMES = ["city", "count", "price", "urgent", "level", "tags", "point", "ids", "title", "limit"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASKS_WEATHER = ["What is the weather in Paris?", "Is it raining in London now?", "How warm is it in Rome today?"]
ASKS_OTHER = ["What is 2 + 2?", "Hello! How are you?", "Write a haiku about the sea."]


def schema(number: int) -> dict[str, Any]:
    """Parameters with two to four properties of varied types, some of them optional."""
    count = 2 + number % 3
    chosen = [(NAMES[(number + i) % len(NAMES)], PROPERTIES[(number * 3 + i) % len(PROPERTIES)]) for i in range(count)]
    properties = dict(chosen)
    required = [name for i, (name, _) in enumerate(chosen) if i == 0 or (number + i) % 2 == 0]
    return {"type": "object", "properties": properties, "required": required}


@contextmanager
def running_server() -> Iterator[httpx.Client]:
    port = free_port()
    process = subprocess.Popen([str(PORTICO), "serve", "--port", str(port)])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300, trust_env=False) as client:
            wait_until_ready(client, process)
            yield client
    finally:
        stop(process)


def call(client: httpx.Client, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 400, **body})
    response.raise_for_status()
    return response.json()["choices"][0], time.perf_counter() - started


def valid(arguments: str, parameters: dict[str, Any]) -> tuple[bool, bool]:
    """(parses, validates)"""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return False, False
    try:
        jsonschema.validate(value, parameters)
    except jsonschema.ValidationError:
        return True, False
    return True, True


def forced(client: httpx.Client, schemas: int) -> list[list[str]]:
    rows = []
    for label, sampling in (("temperature 0", {"temperature": 0}), ("temperature 1, seeded", {"temperature": 1})):
        parses = validates = 0
        seconds = []
        for number in range(schemas):
            parameters = schema(number)
            tool = {"type": "function", "function": {"name": f"record_{number}", "parameters": parameters}}
            body = {
                "messages": [{"role": "user", "content": f"Record item number {number}."}],
                "tools": [tool],
                "tool_choice": "required",
                "parallel_tool_calls": False,
                "seed": number,
                **sampling,
            }
            choice, elapsed = call(client, body)
            seconds.append(elapsed)
            calls = choice["message"].get("tool_calls") or []
            ok = [valid(c["function"]["arguments"], parameters) for c in calls] or [(False, False)]
            parses += all(p for p, _ in ok)
            validates += all(v for _, v in ok)
        rows.append(
            [
                f"forced ({label})",
                str(schemas),
                f"{parses / schemas:.0%}",
                f"{validates / schemas:.0%}",
                "100% (required)",
                f"{statistics.median(seconds):.2f}",
            ]
        )
    return rows


def auto(client: httpx.Client, seeds: int) -> list[list[str]]:
    rows = []
    for label, questions in (("auto, weather questions", ASKS_WEATHER), ("auto, other questions", ASKS_OTHER)):
        answers = calls = valid_calls = 0
        seconds = []
        for question in questions:
            for seed in range(seeds):
                body = {
                    "messages": [{"role": "user", "content": question}],
                    "tools": [WEATHER],
                    "temperature": 0.7,
                    "seed": seed,
                }
                choice, elapsed = call(client, body)
                seconds.append(elapsed)
                answers += 1
                made = choice["message"].get("tool_calls") or []
                calls += bool(made)
                valid_calls += bool(made) and all(
                    valid(c["function"]["arguments"], WEATHER["function"]["parameters"])[1] for c in made
                )
        rows.append(
            [
                label,
                str(answers),
                f"{valid_calls / calls:.0%}" if calls else "-",
                f"{valid_calls / calls:.0%}" if calls else "-",
                f"{calls / answers:.0%}",
                f"{statistics.median(seconds):.2f}",
            ]
        )
    return rows


HEADER = ["requests", "n", "calls parse", "calls validate", "answered with a call", "median s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemas", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    with running_server() as client:
        rows = forced(client, args.schemas) + auto(client, args.seeds)
    if args.markdown:
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "---|" * len(HEADER))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*HEADER, title="Tool calls on SmolLM2-135M (embedded)")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
