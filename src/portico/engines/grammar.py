"""Output constraints as llama.cpp grammars: JSON output (``response_format``) and tool calls, compiled once per
schema.

Tool calls use a generic format that works with any chat template (docs/api.md): each call is one line
``<tool_call>{"name": "<function>", "arguments": <JSON object>}</tool_call>``. The grammar enumerates the
offered functions and, for each, its arguments as llama.cpp's JSON-schema converter writes them, so a call
always parses and its arguments validate against the function's ``parameters``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from portico.errors import UnsupportedParameter

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
# A function without `parameters` takes an object of any shape (OpenAI: "omitting parameters defines a
# function with an empty parameter list").
_ANY_OBJECT = {"type": "object"}


def json_grammar(schema: dict[str, Any]) -> Any:
    """A ``LlamaGrammar`` for ``schema``; ``{}`` means any JSON object."""
    return _compile(json.dumps(schema, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _compile(schema_json: str) -> Any:
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    try:
        if schema_json == "{}":  # any JSON value (json_object mode)
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return LlamaGrammar.from_json_schema(schema_json, verbose=False)
    except (ValueError, RuntimeError, KeyError, TypeError, RecursionError) as exc:
        raise UnsupportedParameter(
            "response_format.json_schema could not be turned into a grammar; simplify the schema.",
            param="response_format.json_schema",
        ) from exc


def tool_call_grammar(functions: Sequence[tuple[str, dict[str, Any] | None]], max_calls: int) -> str:
    """GBNF for 1 to ``max_calls`` call lines, each naming one of ``functions`` (name, parameters schema)."""
    key = json.dumps([[name, parameters] for name, parameters in functions], sort_keys=True)
    return _tool_call_gbnf(key, max_calls)


@functools.lru_cache(maxsize=64)
def _tool_call_gbnf(functions_json: str, max_calls: int) -> str:
    from llama_cpp import llama_grammar

    converter_type: Any = llama_grammar.SchemaConverter  # untyped in llama-cpp-python
    converter = converter_type(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    alternatives = []
    for number, (name, parameters) in enumerate(json.loads(functions_json)):
        try:
            schema = converter.resolve_refs(parameters or _ANY_OBJECT, f"tool-{number}")
            rule = converter.visit(schema, f"arguments-{number}")
        except (ValueError, RuntimeError, KeyError, TypeError, RecursionError) as exc:
            raise UnsupportedParameter(
                f"The parameters of function '{name}' could not be turned into a grammar; simplify the schema.",
                param=f"tools[{number}].function.parameters",
            ) from exc
        alternatives.append(f'"\\"{name}\\", \\"arguments\\": " {rule}')
    more = f' ("\\n" call){{0,{max_calls - 1}}}' if max_calls > 1 else ""
    head = [
        f"root ::= call{more}",
        f'call ::= "{TOOL_CALL_OPEN}{{\\"name\\": " ( {" | ".join(alternatives)} ) "}}{TOOL_CALL_CLOSE}"',
    ]
    return "\n".join([*head, converter.format_grammar()])


@functools.lru_cache(maxsize=64)
def compiled(gbnf: str) -> Any:
    """A ``LlamaGrammar`` for GBNF text."""
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(gbnf, verbose=False)
