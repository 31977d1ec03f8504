"""A Responses API request as the chat completion the pipeline runs.

A response's turn, for ``previous_response_id``, is kept as chat messages: the input items read as messages
(instructions are not part of it: OpenAI does not carry them over), then the answer.
"""

from __future__ import annotations

from typing import Any

from portico.constants import new_id
from portico.errors import InvalidRequest
from portico.schemas.chat import ChatCompletion, ChatCompletionRequest
from portico.schemas.responses import (
    TEXT_CONTENT,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionToolChoice,
    FunctionToolSpec,
    InputAudio,
    InputContent,
    InputFile,
    InputImage,
    InputItem,
    ItemReference,
    MessageItem,
    ReasoningItem,
    Refusal,
    ResponseCreateRequest,
    TextFormatJsonObject,
    TextFormatJsonSchema,
)

PREFIX_RESPONSE = "resp_"
PREFIX_OUTPUT_MESSAGE = "msg_"
PREFIX_FUNCTION_CALL_ITEM = "fc_"
PREFIX_INPUT_ITEM = "item_"

Message = dict[str, Any]  # a chat message as the chat request takes it


# -- request → chat ----------------------------------------------------------------------------------------
def _content_part(part: InputContent, where: str) -> dict[str, Any]:
    """An input content part as a chat content part (a text model refuses the non-text ones when prepared)."""
    if isinstance(part, Refusal):
        return {"type": "text", "text": part.refusal}
    if isinstance(part, TEXT_CONTENT):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage):
        if part.image_url is None:
            raise InvalidRequest("An input_image by file_id is not supported; send image_url.", param=where)
        return {"type": "image_url", "image_url": {"url": part.image_url, "detail": part.detail or "auto"}}
    if isinstance(part, InputFile):
        return {"type": "file", "file": part.model_dump(exclude={"type"}, exclude_none=True)}
    assert isinstance(part, InputAudio)
    return {"type": "input_audio", "input_audio": part.input_audio}


def _content(content: str | list[InputContent], where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts = [_content_part(part, f"{where}[{n}]") for n, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _text(content: str | list[InputContent]) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        part.refusal if isinstance(part, Refusal) else part.text for part in content if isinstance(part, TEXT_CONTENT)
    )


def input_messages(items: str | list[InputItem]) -> list[Message]:
    """``input`` as chat messages: a string is one user message; consecutive function calls (and the assistant
    message before them) make one assistant message with ``tool_calls``; reasoning items add nothing."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[Message] = []
    for n, item in enumerate(items):
        where = f"input[{n}]"
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": _content(item.content, f"{where}.content")})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and isinstance(last.get("content"), str | None):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else _text(item.output)
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
        elif isinstance(item, ItemReference):
            raise InvalidRequest(
                "item_reference input items are not supported; send the item itself, or previous_response_id "
                "to continue from a stored response.",
                param=where,
            )
        else:
            assert isinstance(item, ReasoningItem)
    return messages


def output_messages(completion: ChatCompletion) -> list[Message]:
    """The answer as the assistant message a later turn sends back."""
    message = completion.choices[0].message
    answer: Message = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        answer["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    return [answer]


def _tools(body: ResponseCreateRequest) -> list[dict[str, Any]] | None:
    if body.tools is None:
        return None
    tools = []
    for n, tool in enumerate(body.tools):
        if not isinstance(tool, FunctionToolSpec):
            raise InvalidRequest(
                f"Tool type '{tool.type}' is a tool OpenAI hosts; Portico runs only function tools (your code "
                "runs them and sends back a function_call_output).",
                param=f"tools[{n}].type",
            )
        tools.append({"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)})
    return tools


def _tool_choice(body: ResponseCreateRequest) -> str | dict[str, Any] | None:
    """A named function as chat names it (``{"type": "function", "function": {"name"}}``)."""
    if isinstance(body.tool_choice, FunctionToolChoice):
        return {"type": "function", "function": {"name": body.tool_choice.name}}
    return body.tool_choice


def _response_format(body: ResponseCreateRequest) -> dict[str, Any] | None:
    text_format = body.text.format if body.text is not None else None
    if isinstance(text_format, TextFormatJsonSchema):
        spec = text_format.model_dump(exclude={"type"}, exclude_none=True, by_alias=True)
        return {"type": "json_schema", "json_schema": spec}
    if isinstance(text_format, TextFormatJsonObject):
        return {"type": "json_object"}
    return None


def _refuse_unsupported(body: ResponseCreateRequest) -> None:
    if body.prompt is not None:
        raise InvalidRequest("Stored prompt templates are not supported; send input and instructions.", param="prompt")
    if body.conversation is not None:
        raise InvalidRequest(
            "Conversation objects are not supported here; use previous_response_id (or /v1/conversations).",
            param="conversation",
        )
    if body.background and not body.store:
        raise InvalidRequest("background: true needs store: true (the result is read back later).", param="store")


def wants_logprobs(body: ResponseCreateRequest) -> bool:
    return body.top_logprobs is not None or "message.output_text.logprobs" in (body.include or [])


def chat_request(body: ResponseCreateRequest, history: list[Message]) -> ChatCompletionRequest:
    """The chat completion that answers ``body``, after the turns of ``history`` (previous responses)."""
    _refuse_unsupported(body)
    messages: list[Message] = [{"role": "developer", "content": body.instructions}] if body.instructions else []
    messages += history + input_messages(body.input)
    if not messages:
        raise InvalidRequest("input holds no message to answer.", param="input")
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "stream": body.stream,
        "max_tokens": body.max_output_tokens,
        "tools": _tools(body),
        "tool_choice": _tool_choice(body),
        "parallel_tool_calls": body.parallel_tool_calls,
        "response_format": _response_format(body),
        "seed": body.seed,
        "user": body.user,
        "safety_identifier": body.safety_identifier,
        "prompt_cache_key": body.prompt_cache_key,
        "service_tier": body.service_tier,
        "reasoning_effort": body.reasoning.effort if body.reasoning is not None else None,
        "verbosity": body.text.verbosity if body.text is not None else None,
        "prompt_cache_options": body.prompt_cache_options,
        "prompt_cache_retention": body.prompt_cache_retention,
        "moderation": body.moderation,
    }
    if body.temperature is not None:
        fields["temperature"] = body.temperature
    if body.top_p is not None:
        fields["top_p"] = body.top_p
    if wants_logprobs(body):
        fields.update(logprobs=True, top_logprobs=body.top_logprobs or 0)
    if body.stream:
        fields["stream_options"] = {"include_usage": True}
    try:
        return ChatCompletionRequest.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValueError as exc:  # a message the chat schema refuses (e.g. an assistant turn with no content)
        raise InvalidRequest(f"input cannot be read as a conversation: {exc}", param="input") from None


def stored_input_items(body: ResponseCreateRequest) -> list[dict[str, Any]]:
    """The input items as ``input_items`` lists them: each with an id (the one sent, or a new one)."""
    if isinstance(body.input, str):
        items: list[dict[str, Any]] = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": body.input}]}
        ]
    else:
        items = [item.model_dump(mode="json", exclude_none=True) for item in body.input]
    for item in items:
        if item.get("type") == "message" and isinstance(item.get("content"), str):
            kind = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": kind, "text": item["content"]}]
        item.setdefault("id", new_id(PREFIX_INPUT_ITEM))
        if item.get("type") == "message":
            item.setdefault("status", "completed")
    return items
