"""A chat completion (whole, or as the pipeline's stream events) as the Responses API's response object and
typed events. The request's side is ``response_request``."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from portico.constants import FinishReason
from portico.errors import PorticoError
from portico.schemas.chat import ChatCompletion
from portico.schemas.common import Usage
from portico.schemas.responses import (
    IncompleteDetails,
    InputTokensDetails,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputTextPart,
    OutputTokensDetails,
    ResponseCreateRequest,
    ResponseError,
    ResponseObject,
    ResponseStatus,
    ResponseUsage,
)
from portico.services.generation.chunks import wire_token
from portico.services.generation.response_request import (
    PREFIX_FUNCTION_CALL_ITEM,
    PREFIX_OUTPUT_MESSAGE,
    PREFIX_RESPONSE,
)
from portico.services.generation.types import ChoiceEnd, Event, TextDelta, ToolCallDelta, Transcript


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
