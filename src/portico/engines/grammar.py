"""Output constraints as llama.cpp grammars: JSON output (``response_format``) and tool calls, compiled once per
schema.

Tool calls use a generic format that works with any chat template (docs/api.md): each call is one line
``<tool_call>{"name": "<function>", "arguments": <JSON object>}</tool_call>``. The grammar enumerates the
offered functions and, for each, its arguments as llama.cpp's JSON-schema converter writes them, so a call
always parses and its arguments validate against the function's ``parameters``.

Two corrections to the converter llama-cpp-python ships: its strings admit raw control characters (a line
break inside a string, which JSON forbids), so ``char`` is replaced by JSON's own; and a string or array the
schema leaves unbounded gets a bound (``MAX_STRING``, ``MAX_ITEMS``, or the schema's minimum if larger), so
a small model cannot loop inside one until ``max_tokens`` and leave a call that never closes. Whatever the
bounded grammar admits still validates against the schema as given.
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
MAX_STRING = 200  # characters of a string the schema does not bound
MAX_ITEMS = 16  # items of an array the schema does not bound
JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def json_grammar(schema: dict[str, Any]) -> Any:
    """A ``LlamaGrammar`` for ``schema``; ``{}`` means any JSON object."""
    return _compile(json.dumps(schema, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _compile(schema_json: str) -> Any:
    from llama_cpp.llama_grammar import JSON_GBNF

    if schema_json == "{}":  # any JSON value (json_object mode)
        return compiled(JSON_GBNF)
    converter = _converter()
    try:
        converter.visit(converter.resolve_refs(bounded_schema(json.loads(schema_json)), "response_format"), "")
    except (ValueError, RuntimeError, KeyError, TypeError, RecursionError, AssertionError) as exc:
        raise UnsupportedParameter(
            "response_format.json_schema could not be turned into a grammar; simplify the schema.",
            param="response_format.json_schema",
        ) from exc
    return compiled(_formatted(converter))


def _converter() -> Any:
    from llama_cpp import llama_grammar

    converter_type: Any = llama_grammar.SchemaConverter  # untyped in llama-cpp-python
    return converter_type(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _formatted(converter: Any) -> str:
    """The converter's rules, with JSON's own string characters."""
    if "char" in converter._rules:
        converter._rules["char"] = JSON_CHAR
    grammar: str = converter.format_grammar()
    return grammar


def bounded_schema(schema: Any) -> Any:
    """``schema`` with a length bound on every string and array it leaves unbounded (see the module doc)."""
    if isinstance(schema, list):
        return [bounded_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: bounded_schema(value) for key, value in schema.items()}
    kind = schema.get("type")
    free_string = not any(key in schema for key in ("enum", "const", "pattern", "format", "maxLength"))
    if kind == "string" and free_string:
        bounded["maxLength"] = max(MAX_STRING, int(schema.get("minLength", 0)))
    if kind == "array" and "maxItems" not in schema:
        bounded["maxItems"] = max(MAX_ITEMS, int(schema.get("minItems", 0)))
    return bounded


def tool_call_grammar(functions: Sequence[tuple[str, dict[str, Any] | None]], max_calls: int) -> str:
    """GBNF for 1 to ``max_calls`` call lines, each naming one of ``functions`` (name, parameters schema)."""
    key = json.dumps([[name, parameters] for name, parameters in functions], sort_keys=True)
    return _tool_call_gbnf(key, max_calls)


@functools.lru_cache(maxsize=64)
def _tool_call_gbnf(functions_json: str, max_calls: int) -> str:
    converter = _converter()
    alternatives = []
    for number, (name, parameters) in enumerate(json.loads(functions_json)):
        try:
            schema = converter.resolve_refs(bounded_schema(parameters or _ANY_OBJECT), f"tool-{number}")
            rule = converter.visit(schema, f"arguments-{number}")
        except (ValueError, RuntimeError, KeyError, TypeError, RecursionError, AssertionError) as exc:
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
    return "\n".join([*head, _formatted(converter)])


@functools.lru_cache(maxsize=64)
def compiled(gbnf: str) -> Any:
    """A ``LlamaGrammar`` for GBNF text."""
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(gbnf, verbose=False)
