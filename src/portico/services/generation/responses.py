"""The Responses API's wire shapes, both ways: a response request as the chat completion the pipeline runs, and
that completion (whole, or as the pipeline's stream events) as OpenAI's response object and typed events.

A response's turn, for ``previous_response_id``, is kept as chat messages: the input items read as messages
(instructions are not part of it: OpenAI does not carry them over), then the answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from portico.constants import FinishReason, new_id
from portico.errors import InvalidRequest, PorticoError
from portico.schemas.chat import ChatCompletion, ChatCompletionRequest
from portico.schemas.common import Usage
from portico.schemas.responses import (
    TEXT_CONTENT,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionToolChoice,
    FunctionToolSpec,
    IncompleteDetails,
    InputAudio,
    InputContent,
    InputFile,
    InputImage,
    InputItem,
    InputTokensDetails,
    ItemReference,
    MessageItem,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputTextPart,
    OutputTokensDetails,
    ReasoningItem,
    Refusal,
    ResponseCreateRequest,
    ResponseError,
    ResponseObject,
    ResponseStatus,
    ResponseUsage,
    TextFormatJsonObject,
    TextFormatJsonSchema,
)
from portico.services.generation.chunks import wire_token
from portico.services.generation.types import ChoiceEnd, Event, TextDelta, ToolCallDelta, Transcript

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


# -- chat → response ---------------------------------------------------------------------------------------
def _usage(usage: Usage) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=usage.prompt_tokens_details.cached_tokens),
        output_tokens=usage.completion_tokens,
        output_tokens_details=OutputTokensDetails(),
        total_tokens=usage.total_tokens,
        cost=usage.cost,
    )


def message_item_id(response_id: str) -> str:
    """The id of a response's output message: made from the response's, so a stream replayed from a job's
    events names the items as the first run did."""
    return PREFIX_OUTPUT_MESSAGE + response_id.removeprefix(PREFIX_RESPONSE)


def call_item_id(response_id: str, call: int) -> str:
    return f"{PREFIX_FUNCTION_CALL_ITEM}{response_id.removeprefix(PREFIX_RESPONSE)}_{call}"


def output_items(completion: ChatCompletion, response_id: str) -> list[OutputItem]:
    """The answer's text as one message, then each tool call as a function_call item."""
    choice = completion.choices[0]
    message = choice.message
    items: list[OutputItem] = []
    if message.content:
        tokens = choice.logprobs.content if choice.logprobs is not None else None
        logprobs = [token.model_dump() for token in tokens or ()]
        part = OutputTextPart(text=message.content, logprobs=logprobs)
        items.append(OutputMessage(id=message_item_id(response_id), status="completed", content=[part]))
    for n, call in enumerate(message.tool_calls or ()):
        items.append(
            OutputFunctionCall(
                id=call_item_id(response_id, n),
                call_id=call.id,
                name=call.function.name,
                arguments=call.function.arguments,
                status="completed",
            )
        )
    return items


def _ending(finish_reason: str) -> tuple[ResponseStatus, IncompleteDetails | None]:
    if finish_reason == FinishReason.LENGTH:
        return "incomplete", IncompleteDetails(reason="max_output_tokens")
    if finish_reason == FinishReason.CONTENT_FILTER:
        return "incomplete", IncompleteDetails(reason="content_filter")
    return "completed", None


def response_object(
    body: ResponseCreateRequest,
    response_id: str,
    created_at: int,
    *,
    model: str,
    status: ResponseStatus,
    output: list[OutputItem] | None = None,
    usage: Usage | None = None,
    incomplete: IncompleteDetails | None = None,
    error: ResponseError | None = None,
) -> ResponseObject:
    """The response object for ``body``: its settings as the request gave them (OpenAI's defaults where it did
    not), and what it has produced so far."""
    text_format = body.text.format if body.text is not None and body.text.format is not None else None
    text: dict[str, Any] = {"format": text_format.model_dump(by_alias=True) if text_format else {"type": "text"}}
    if body.text is not None and body.text.verbosity is not None:
        text["verbosity"] = body.text.verbosity
    tool_choice = body.tool_choice if body.tool_choice is not None else "auto"
    reasoning: dict[str, Any] = {"effort": None, "summary": None}
    if body.reasoning is not None:
        reasoning.update(body.reasoning.model_dump(include={"effort", "summary"}))
    return ResponseObject(
        id=response_id,
        created_at=created_at,
        status=status,
        background=body.background,
        error=error,
        incomplete_details=incomplete,
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        max_tool_calls=body.max_tool_calls,
        model=model,
        output=output or [],
        parallel_tool_calls=body.parallel_tool_calls is not False,
        previous_response_id=body.previous_response_id,
        reasoning=reasoning,
        store=body.store,
        temperature=1.0 if body.temperature is None else body.temperature,
        text=text,
        tool_choice=tool_choice if isinstance(tool_choice, str) else tool_choice.model_dump(),
        tools=[tool.model_dump(exclude_none=True) for tool in body.tools or ()],
        top_logprobs=body.top_logprobs or 0,
        top_p=1.0 if body.top_p is None else body.top_p,
        truncation=body.truncation or "disabled",
        usage=None if usage is None else _usage(usage),
        user=body.user,
        metadata=dict(body.metadata or {}),
    )


def answered(
    body: ResponseCreateRequest, response_id: str, created_at: int, completion: ChatCompletion
) -> ResponseObject:
    status, incomplete = _ending(completion.choices[0].finish_reason)
    return response_object(
        body,
        response_id,
        created_at,
        model=completion.model,
        status=status,
        output=output_items(completion, response_id),
        usage=completion.usage,
        incomplete=incomplete,
    )


def failed(
    body: ResponseCreateRequest, response_id: str, created_at: int, model: str, exc: PorticoError
) -> ResponseObject:
    error = ResponseError(code=exc.code, message=exc.message)
    return response_object(body, response_id, created_at, model=model, status="failed", error=error)


# -- the stream --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Item:
    """An output item being streamed: where it is in the output, and its text or arguments so far."""

    index: int
    item: OutputMessage | OutputFunctionCall
    parts: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)


# Called when the source has ended well, with the transcript of what it streamed: the final response.
Finish = Callable[[Transcript], Awaitable[ResponseObject]]


@dataclass(slots=True)
class ResponseStream:
    """One response's typed events, each with its ``sequence_number``: created, in_progress, then each output
    item (added, its deltas, done), then completed or incomplete; or, when the source fails, ``error`` and
    ``response.failed``. The source is a live generation's events or a job's, replayed; ``finish`` (storing
    the response) runs before the last event, so a client that saw it can read the response back."""

    body: ResponseCreateRequest
    response_id: str
    created_at: int
    model: str
    logprobs: bool
    finish: Finish
    sequence: int = 0
    _text: _Item | None = None
    _calls: dict[int, _Item] = field(default_factory=dict)

    def event(self, kind: str, **data: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return event

    def _snapshot(self, status: ResponseStatus) -> dict[str, Any]:
        response = response_object(self.body, self.response_id, self.created_at, model=self.model, status=status)
        return response.model_dump()

    def error_event(self, exc: PorticoError) -> dict[str, Any]:
        return self.event("error", code=exc.code, message=exc.message, param=exc.param)

    async def events(self, source: AsyncIterator[Event]) -> AsyncGenerator[dict[str, Any], None]:
        yield self.event(
            "response.created", response=self._snapshot("queued" if self.body.background else "in_progress")
        )
        yield self.event("response.in_progress", response=self._snapshot("in_progress"))
        transcript = Transcript(logprobs=self.logprobs)
        try:
            async for event in source:
                transcript.add(event)
                for typed in self._typed(event):
                    yield typed
        except PorticoError as exc:
            yield self.error_event(exc)
            yield self.event(
                "response.failed",
                response=failed(self.body, self.response_id, self.created_at, self.model, exc).model_dump(),
            )
            return
        response = await self.finish(transcript)
        kind = "response.completed" if response.status == "completed" else f"response.{response.status}"
        yield self.event(kind, response=response.model_dump())

    def _typed(self, event: Event) -> list[dict[str, Any]]:
        if getattr(event, "index", None) != 0:  # only the first choice (a response has one answer)
            return []
        if isinstance(event, TextDelta):
            return self._text_delta(event) if event.text else []
        if isinstance(event, ToolCallDelta):
            return self._call_delta(event)
        if isinstance(event, ChoiceEnd):
            ends = self._text_done() if self._text is not None else []
            for call in self._calls.values():
                ends += self._call_done(call)
            return ends
        return []

    def _next_index(self) -> int:
        return (self._text is not None) + len(self._calls)

    def _text_delta(self, event: TextDelta) -> list[dict[str, Any]]:
        typed = []
        if self._text is None:
            message = OutputMessage(id=message_item_id(self.response_id), status="in_progress", content=[])
            self._text = _Item(self._next_index(), message)
            typed += [
                self._added(self._text),
                self._at(self._text, "response.content_part.added", part=OutputTextPart(text="").model_dump()),
            ]
        logprobs = [wire_token(token).model_dump() for token in event.logprobs] if self.logprobs else []
        self._text.parts.append(event.text)
        self._text.logprobs += logprobs
        typed.append(self._at(self._text, "response.output_text.delta", delta=event.text, logprobs=logprobs))
        return typed

    def _call_delta(self, event: ToolCallDelta) -> list[dict[str, Any]]:
        typed = []
        if event.call not in self._calls:
            call = OutputFunctionCall(
                id=call_item_id(self.response_id, event.call),
                call_id=event.id or "",
                name=event.name or "",
                arguments="",
                status="in_progress",
            )
            self._calls[event.call] = _Item(self._next_index(), call)
            typed.append(self._added(self._calls[event.call]))
        if event.arguments:
            item = self._calls[event.call]
            item.parts.append(event.arguments)
            typed.append(self._item_event(item, "response.function_call_arguments.delta", delta=event.arguments))
        return typed

    def _added(self, item: _Item) -> dict[str, Any]:
        return self.event("response.output_item.added", output_index=item.index, item=item.item.model_dump())

    def _item_event(self, item: _Item, kind: str, **data: Any) -> dict[str, Any]:
        return self.event(kind, item_id=item.item.id, output_index=item.index, **data)

    def _at(self, item: _Item, kind: str, **data: Any) -> dict[str, Any]:
        return self._item_event(item, kind, content_index=0, **data)

    def _text_done(self) -> list[dict[str, Any]]:
        assert self._text is not None
        text = "".join(self._text.parts)
        part = OutputTextPart(text=text, logprobs=self._text.logprobs)
        item = self._text.item.model_copy(update={"status": "completed", "content": [part]})
        return [
            self._at(self._text, "response.output_text.done", text=text, logprobs=self._text.logprobs),
            self._at(self._text, "response.content_part.done", part=part.model_dump()),
            self.event("response.output_item.done", output_index=self._text.index, item=item.model_dump()),
        ]

    def _call_done(self, call: _Item) -> list[dict[str, Any]]:
        arguments = "".join(call.parts)
        item = call.item.model_copy(update={"status": "completed", "arguments": arguments})
        assert isinstance(item, OutputFunctionCall)
        return [
            self._item_event(call, "response.function_call_arguments.done", arguments=arguments, name=item.name),
            self.event("response.output_item.done", output_index=call.index, item=item.model_dump()),
        ]
