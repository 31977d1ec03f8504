"""Anthropic's Messages API, both ways: a message request as the chat completion the pipeline runs, and that
completion (whole, or as the pipeline's chat chunks) as Anthropic's message and its stream events.

A user message's ``tool_result`` blocks become ``tool`` messages (before the message's text, where Anthropic
puts them); an assistant message's ``tool_use`` blocks become its ``tool_calls``. Pure functions: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from portico.constants import PREFIX_CHAT_COMPLETION, PREFIX_MESSAGE
from portico.errors import EngineError, InvalidRequest, UnsupportedParameter
from portico.schemas.anthropic import (
    ContentBlock,
    CountTokensRequest,
    ImageBlock,
    Message,
    MessageCreateRequest,
    MessageParam,
    MessageUsage,
    StopReason,
    TextBlock,
    TextContent,
    ToolChoice,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolDefinition,
    ToolResultBlock,
    ToolUseContent,
)
from portico.schemas.chat import (
    CalledFunction,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    FinishReasonName,
    FunctionChoice,
    FunctionDefinition,
    FunctionTool,
    MessageToolCall,
    NamedToolChoice,
    Tool,
)
from portico.schemas.chat import ToolChoice as ChatToolChoice
from portico.schemas.common import Usage
from portico.schemas.tokenize import TokenizeRequest

STOP_REASONS: dict[FinishReasonName, StopReason] = {
    # The chat pipeline does not say whether a stop sequence or the model's end of turn ended the answer.
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# -- request → chat ----------------------------------------------------------------------------------------
def _refuse_image(where: str) -> UnsupportedParameter:
    return UnsupportedParameter(
        "This model reads text only; an 'image' block needs a model that accepts images.", param=f"{where}.type"
    )


def _result_text(block: ToolResultBlock, where: str) -> str:
    if block.content is None or isinstance(block.content, str):
        return block.content or ""
    for number, part in enumerate(block.content):
        if isinstance(part, ImageBlock):
            raise _refuse_image(f"{where}.content[{number}]")
    return "".join(part.text for part in block.content if isinstance(part, TextBlock))


def _user_messages(blocks: Sequence[ContentBlock], where: str) -> list[ChatMessage]:
    """The tool results (one ``tool`` message each), then the text, if any, as one user message."""
    results: list[ChatMessage] = []
    texts: list[str] = []
    for number, block in enumerate(blocks):
        at = f"{where}[{number}]"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolResultBlock):
            text = _result_text(block, at)
            results.append(ChatMessage(role="tool", tool_call_id=block.tool_use_id, content=text))
        elif isinstance(block, ImageBlock):
            raise _refuse_image(at)
        else:
            raise InvalidRequest("A tool_use block belongs in an assistant message.", param=f"{at}.type")
    if texts or not results:
        results.append(ChatMessage(role="user", content="".join(texts)))
    return results


def _assistant_message(blocks: Sequence[ContentBlock], where: str) -> ChatMessage:
    texts: list[str] = []
    calls: list[MessageToolCall] = []
    for number, block in enumerate(blocks):
        at = f"{where}[{number}]"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ImageBlock):
            raise _refuse_image(at)
        elif isinstance(block, ToolResultBlock):
            raise InvalidRequest("A tool_result block belongs in a user message.", param=f"{at}.type")
        else:
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append(MessageToolCall(id=block.id, function=CalledFunction(name=block.name, arguments=arguments)))
    content = "".join(texts) if texts or not calls else None
    return ChatMessage(role="assistant", content=content, tool_calls=calls or None)


def _chat_messages(message: MessageParam, where: str) -> list[ChatMessage]:
    blocks: Sequence[ContentBlock] = (
        [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) else message.content
    )
    if message.role == "user":
        return _user_messages(blocks, f"{where}.content")
    return [_assistant_message(blocks, f"{where}.content")]


def chat_messages(body: CountTokensRequest) -> list[ChatMessage]:
    """``system`` (as the first message), then each message as the chat messages it reads as."""
    system = body.system if isinstance(body.system, str | None) else "".join(block.text for block in body.system)
    messages = [ChatMessage(role="system", content=system)] if system else []
    for number, message in enumerate(body.messages):
        messages += _chat_messages(message, f"messages[{number}]")
    return messages


def _tools(tools: list[ToolDefinition]) -> list[Tool]:
    return [
        FunctionTool(
            type="function",
            function=FunctionDefinition(name=tool.name, description=tool.description, parameters=tool.input_schema),
        )
        for tool in tools
    ]


def _tool_choice(choice: ToolChoice) -> ChatToolChoice:
    if isinstance(choice, ToolChoiceNone):
        return "none"
    if isinstance(choice, ToolChoiceAuto):
        return "auto"
    if isinstance(choice, ToolChoiceAny):
        return "required"
    return NamedToolChoice(type="function", function=FunctionChoice(name=choice.name))


def chat_request(body: MessageCreateRequest) -> ChatCompletionRequest:
    """The chat completion that answers ``body``. Only the fields ``body`` sets are set (an upstream model is
    sent the set fields); ``top_k``, ``thinking``, ``service_tier`` and blocks' ``cache_control`` are dropped."""
    fields: dict[str, Any] = body.model_dump(include={"temperature", "top_p"}, exclude_unset=True)
    if body.stop_sequences is not None:
        fields["stop"] = body.stop_sequences
    if body.metadata is not None and body.metadata.user_id is not None:
        fields["user"] = body.metadata.user_id
    if body.tools is not None:
        fields["tools"] = _tools(body.tools)
    if body.tool_choice is not None:
        fields["tool_choice"] = _tool_choice(body.tool_choice)
        if not isinstance(body.tool_choice, ToolChoiceNone) and body.tool_choice.disable_parallel_tool_use:
            fields["parallel_tool_calls"] = False
    return ChatCompletionRequest(
        model=body.model, messages=chat_messages(body), max_tokens=body.max_tokens, stream=body.stream, **fields
    )


def tokenize_request(body: CountTokensRequest) -> TokenizeRequest:
    """What /v1/tokenize counts for ``body``: its messages and tools as the chat request reads them."""
    return TokenizeRequest(
        model=body.model,
        messages=chat_messages(body),
        tools=_tools(body.tools) if body.tools is not None else None,
        tool_choice=_tool_choice(body.tool_choice) if body.tool_choice is not None else None,
    )


# -- chat → message ----------------------------------------------------------------------------------------
def message_id(completion_id: str) -> str:
    """The message's id: the chat completion's, under Anthropic's prefix (``chatcmpl-4f1c…`` → ``msg_4f1c…``)."""
    return PREFIX_MESSAGE + completion_id.removeprefix(PREFIX_CHAT_COMPLETION)


def message_usage(usage: Usage) -> MessageUsage:
    cached = usage.prompt_tokens_details.cached_tokens
    return MessageUsage(
        input_tokens=usage.prompt_tokens - cached,
        output_tokens=usage.completion_tokens,
        cache_read_input_tokens=cached,
    )


def _input(name: str, arguments: str) -> dict[str, Any]:
    """A call's arguments as the ``input`` object (an upstream may send ``""`` for a call without any)."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise EngineError(f"The model called '{name}' with arguments that are not a JSON object. Retry the request.")
    return parsed


def message(completion: ChatCompletion) -> Message:
    """The completion's (one) choice as a message: its text, then its calls as ``tool_use`` blocks."""
    choice = completion.choices[0]
    content: list[TextContent | ToolUseContent] = []
    if choice.message.content:
        content.append(TextContent(text=choice.message.content))
    for call in choice.message.tool_calls or []:
        name = call.function.name
        content.append(ToolUseContent(id=call.id, name=name, input=_input(name, call.function.arguments)))
    return Message(
        id=message_id(completion.id),
        model=completion.model,
        content=content,
        stop_reason=STOP_REASONS[choice.finish_reason],
        usage=message_usage(completion.usage),
    )


# -- chat chunks → message events --------------------------------------------------------------------------
Event = dict[str, Any]  # one of Anthropic's stream events; its ``type`` names it


@dataclass(slots=True)
class _Blocks:
    """The content blocks of a streamed message: how many were started, and the kind of the open (last) one.
    The pipeline streams a choice's text and calls one after the other, so one block is open at a time."""

    started: int = 0
    open: Literal["text", "tool_use"] | None = None

    def start(self, block: TextContent | ToolUseContent) -> list[Event]:
        events = self.stop()
        self.open, self.started = block.type, self.started + 1
        return [
            *events,
            {"type": "content_block_start", "index": self.started - 1, "content_block": block.model_dump()},
        ]

    def stop(self) -> list[Event]:
        if self.open is None:
            return []
        self.open = None
        return [{"type": "content_block_stop", "index": self.started - 1}]

    def delta(self, delta: dict[str, str]) -> Event:
        return {"type": "content_block_delta", "index": self.started - 1, "delta": delta}

    def read(self, delta: dict[str, Any]) -> list[Event]:
        """A chat chunk's delta as block events: text into a text block, each call into a tool_use block."""
        events: list[Event] = []
        if text := delta.get("content"):
            if self.open != "text":
                events += self.start(TextContent(text=""))
            events.append(self.delta({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or []:
            function = call["function"]
            if call.get("id") is not None:  # a call's first delta names it
                events += self.start(ToolUseContent(id=call["id"], name=function["name"], input={}))
            if arguments := function.get("arguments"):
                events.append(self.delta({"type": "input_json_delta", "partial_json": arguments}))
        return events


async def message_events(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Event]:
    """A chat chunk stream (with its usage chunk) as Anthropic's: ``message_start``, each block's start, deltas
    and stop, then ``message_delta`` (stop reason, usage) and ``message_stop``. The prompt's tokens are known
    only at the end: ``message_start`` counts 0 of them, ``message_delta`` all."""
    blocks = _Blocks()
    stop_reason: StopReason | None = None
    usage = MessageUsage(input_tokens=0, output_tokens=0, cache_read_input_tokens=0)
    opened = False
    async for chunk in chunks:
        if not opened:  # the first chunk (the role chunk) names the completion and the model
            opened = True
            opening = Message(
                id=message_id(chunk["id"]), model=chunk["model"], content=[], stop_reason=None, usage=usage
            )
            yield {"type": "message_start", "message": opening.model_dump()}
        for choice in chunk["choices"]:
            for event in blocks.read(choice["delta"]):
                yield event
            if choice["finish_reason"] is not None:
                stop_reason = STOP_REASONS[choice["finish_reason"]]
        if chunk.get("usage") is not None:
            usage = message_usage(Usage.model_validate(chunk["usage"]))
    for event in blocks.stop():
        yield event
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": usage.model_dump(),
    }
    yield {"type": "message_stop"}
