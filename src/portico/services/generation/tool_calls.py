"""Tool calls on the embedded engine: which functions a request offers and how, the generic prompt format that
describes them to the model, and the reader that turns the model's call lines back into OpenAI's tool calls.

The format (docs/api.md, "Tool calls"): the functions are listed in a system message, and the model calls one
by writing ``<tool_call>{"name": "<function>", "arguments": <JSON object>}</tool_call>`` on a line of its own.
A grammar built from the functions' schemas (engines/grammar.py) holds the model to it: from the first token
when a call is required (``tool_choice`` "required" or a named function), from the first ``<tool_call>`` on
when the model may choose (``auto``). ``none`` offers no functions. ``parallel_tool_calls: false``, a named
function and the legacy ``functions`` allow one call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from portico.constants import PREFIX_TOOL_CALL, FinishReason, new_id
from portico.engines.base import ChatTurn, Grammar
from portico.engines.grammar import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, tool_call_grammar
from portico.errors import InvalidRequest, UnsupportedParameter
from portico.schemas.chat import (
    AllowedToolsChoice,
    ChatCompletionRequest,
    ChatMessage,
    CustomTool,
    FunctionChoice,
    FunctionDefinition,
    NamedCustomToolChoice,
    NamedToolChoice,
)
from portico.services.generation.types import ChoiceEnd, Event, TextDelta, TokenLogprob, ToolCallDelta

MAX_PARALLEL_CALLS = 8  # calls one answer may make when parallel_tool_calls is on


@dataclass(frozen=True, slots=True)
class ToolUse:
    """The functions offered to the model, whether it must call one, and how many calls it may make."""

    functions: tuple[FunctionDefinition, ...]
    required: bool
    max_calls: int
    legacy: bool  # the request used `functions` / `function_call`: answer with `function_call`

    def grammar(self) -> Grammar:
        gbnf = tool_call_grammar([(f.name, f.parameters) for f in self.functions], self.max_calls)
        return Grammar(gbnf, trigger=None if self.required else TOOL_CALL_OPEN)

    def instructions(self) -> str:
        listed = "\n".join(
            json.dumps({"name": f.name, "description": f.description or "", "parameters": f.parameters or {}})
            for f in self.functions
        )
        must = "You must call a function." if self.required else "Call a function only when it helps; else answer."
        return (
            f"You can call these functions:\n{listed}\n"
            f'To call one, write {TOOL_CALL_OPEN}{{"name": "<function name>", "arguments": <arguments as a JSON '
            f"object>}}{TOOL_CALL_CLOSE} on a line of its own. {must}"
        )


def tool_use(body: ChatCompletionRequest) -> ToolUse | None:
    """What ``body`` offers the model, checked; None when it offers no functions (or ``tool_choice: none``)."""
    legacy = body.functions is not None
    functions = list(body.functions or [])
    for number, tool in enumerate(body.tools or []):
        if isinstance(tool, CustomTool):
            raise UnsupportedParameter(
                "Custom tools need a model that supports them; this model calls function tools only.",
                param=f"tools[{number}].type",
            )
        functions.append(tool.function)
    if not functions:
        return None
    choice = body.function_call if legacy else body.tool_choice
    mode: Literal["auto", "required"] = "auto"
    legacy_or_named = legacy  # one call: the legacy form has no parallel calls, a named choice asks for one
    if choice == "none":
        return None
    if choice == "required":
        mode = "required"
    elif isinstance(choice, NamedToolChoice | FunctionChoice):
        name = choice.function.name if isinstance(choice, NamedToolChoice) else choice.name
        functions = [_named(functions, name, "function_call" if legacy else "tool_choice")]
        mode, legacy_or_named = "required", True
    elif isinstance(choice, NamedCustomToolChoice):
        raise UnsupportedParameter("This model calls function tools only.", param="tool_choice")
    elif isinstance(choice, AllowedToolsChoice):
        allowed = {_allowed_name(entry) for entry in choice.allowed_tools.tools}
        functions = [f for f in functions if f.name in allowed]
        if not functions:
            raise InvalidRequest("tool_choice.allowed_tools names none of the tools.", param="tool_choice")
        mode = choice.allowed_tools.mode
    single = legacy_or_named or body.parallel_tool_calls is False
    return ToolUse(tuple(functions), mode == "required", 1 if single else MAX_PARALLEL_CALLS, legacy)


def _named(functions: Sequence[FunctionDefinition], name: str, param: str) -> FunctionDefinition:
    for function in functions:
        if function.name == name:
            return function
    raise InvalidRequest(f"{param} names the function '{name}', which is not among the tools.", param=param)


def _allowed_name(entry: dict[str, object]) -> str:
    inner = entry.get("function")
    name = inner.get("name") if isinstance(inner, dict) else entry.get("name")
    return name if isinstance(name, str) else ""


# -- the prompt --------------------------------------------------------------------------------------------
def chat_turns(messages: Sequence[ChatMessage], use: ToolUse | None) -> list[ChatTurn]:
    """The chat as the model's template takes it: system/user/assistant turns, the functions described in
    the (first) system turn, calls written in the call format and tool results as user turns."""
    names = {call.id: call.function.name for m in messages for call in m.tool_calls or []}
    turns = [_turn(message, names) for message in messages]
    if use is not None:
        if turns and turns[0].role == "system":
            turns[0] = ChatTurn("system", f"{turns[0].content}\n\n{use.instructions()}")
        else:
            turns.insert(0, ChatTurn("system", use.instructions()))
    return turns


def _turn(message: ChatMessage, names: dict[str, str]) -> ChatTurn:
    if message.role in ("tool", "function"):
        name = message.name if message.role == "function" else names.get(message.tool_call_id or "", "")
        return ChatTurn("user", f'<tool_response name="{name}">\n{message.text()}\n</tool_response>')
    if message.role == "assistant":
        calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]
        if message.function_call is not None:
            calls.append((message.function_call.name, message.function_call.arguments))
        lines = [message.text()] if message.text() else []
        lines += [f'{TOOL_CALL_OPEN}{{"name": "{n}", "arguments": {a}}}{TOOL_CALL_CLOSE}' for n, a in calls]
        return ChatTurn("assistant", "\n".join(lines))
    # Chat templates know system/user/assistant; OpenAI's `developer` role is the newer name for `system`.
    return ChatTurn("system" if message.role == "developer" else message.role, message.text())


# -- reading the answer ------------------------------------------------------------------------------------
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([^"\\]*)"\s*,\s*"arguments"\s*:\s*(?=\S)')
_TAIL = re.compile(r"\s*\}\s*" + re.escape(TOOL_CALL_CLOSE))
_MAX_HEAD = 200  # characters after <tool_call> within which the name must have been read


@dataclass(slots=True)
class _Arguments:
    """Where a call's JSON arguments end: brace depth, outside strings."""

    depth: int = 0
    in_string: bool = False
    escaped: bool = False

    def feed(self, text: str) -> int:
        """How many characters of ``text`` belong to the arguments (all of them while they go on)."""
        for position, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return position + 1
        return len(text)


@dataclass(slots=True)
class CallReader:
    """One choice's text read as content and call lines, as the engine makes it: content streams at once
    (all but what may be the start of ``<tool_call>``), a call's name as soon as it is read, then its
    arguments as they are written."""

    index: int
    state: Literal["content", "head", "arguments", "tail"] = "content"
    held: str = ""
    calls: int = 0
    arguments: _Arguments = field(default_factory=_Arguments)
    call: list[str] = field(default_factory=list)  # the name, then the argument fragments, of the current call
    made: set[str] = field(default_factory=set)  # the calls made, each as its name and canonical arguments
    # The last call repeats an earlier one, name and arguments: a small model, allowed several calls, tends
    # to write the same call over and over until max_tokens; the answer ends there.
    repeated: bool = False

    def feed(self, delta: TextDelta) -> list[Event]:
        events: list[Event] = []
        self.held += delta.text
        logprobs = delta.logprobs
        while self.held:
            before = (self.state, len(self.held))
            events += self._step(logprobs if self.state == "content" else ())
            logprobs = ()
            if (self.state, len(self.held)) == before:
                break  # waiting for more text
        return events

    def end(self, finish: ChoiceEnd) -> list[Event]:
        """What is still held, as content, unless it is the start of a call cut off (by max_tokens, or after
        other calls); the finish reason says the answer is calls if it made any."""
        events: list[Event] = []
        cut_call = self.state == "head" and (self.calls or finish.finish_reason is FinishReason.LENGTH)
        if self.held and self.state in ("content", "head") and not cut_call and not self.calls:
            events.append(TextDelta(self.index, (TOOL_CALL_OPEN if self.state == "head" else "") + self.held))
        self.held = ""
        if self.calls and finish.finish_reason is FinishReason.STOP:
            finish = ChoiceEnd(self.index, FinishReason.TOOL_CALLS)
        return [*events, finish]

    def _step(self, logprobs: tuple[TokenLogprob, ...]) -> list[Event]:
        if self.state == "content":
            return self._content(logprobs)
        if self.state == "head":
            return self._head()
        if self.state == "arguments":
            return self._arguments()
        return self._tail()

    def _content(self, logprobs: tuple[TokenLogprob, ...]) -> list[Event]:
        text, opening, rest = self.held.partition(TOOL_CALL_OPEN)
        if opening:
            self.state, self.held = "head", rest
        else:
            keep = _partial_open(text)
            text, self.held = text[: len(text) - keep], text[len(text) - keep :]
        if self.calls and not text.strip():  # the line breaks between calls
            return []
        return [TextDelta(self.index, text, logprobs)] if text or logprobs else []

    def _head(self) -> list[Event]:
        match = _HEAD.match(self.held)
        if match is None:
            if len(self.held) <= _MAX_HEAD:
                return []
            text, self.state, self.held = TOOL_CALL_OPEN + self.held, "content", ""  # not a call: it was text
            return [TextDelta(self.index, text)]
        self.state, self.held = "arguments", self.held[match.end() :]
        self.arguments = _Arguments()
        self.call = [match.group(1)]
        self.calls += 1
        return [ToolCallDelta(self.index, self.calls - 1, new_id(PREFIX_TOOL_CALL), match.group(1))]

    def _arguments(self) -> list[Event]:
        taken = self.arguments.feed(self.held)
        fragment, self.held = self.held[:taken], self.held[taken:]
        self.call.append(fragment)
        if self.arguments.depth == 0 and fragment.strip():
            self.state = "tail"
        return [ToolCallDelta(self.index, self.calls - 1, arguments=fragment)] if fragment else []

    def _tail(self) -> list[Event]:
        match = _TAIL.match(self.held)
        if match is not None:
            self.state, self.held = "content", self.held[match.end() :]
            made = _canonical(self.call)
            self.repeated = made in self.made
            self.made.add(made)
        return []


def _canonical(call: list[str]) -> str:
    """A call as its name and its arguments with keys sorted and no spacing (JSON that reads the same)."""
    name, arguments = call[0], "".join(call[1:])
    try:
        return name + json.dumps(json.loads(arguments), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return name + arguments


def _partial_open(text: str) -> int:
    """The length of the longest end of ``text`` that could be the start of ``<tool_call>``."""
    for length in range(min(len(text), len(TOOL_CALL_OPEN) - 1), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-length:]):
            return length
    return 0
