"""JSON output constraints as llama.cpp grammars, compiled once per schema."""

from __future__ import annotations

import functools
import json
from typing import Any

from portico.errors import UnsupportedParameter


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
