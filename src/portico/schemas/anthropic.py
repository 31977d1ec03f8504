"""/v1/messages: Anthropic's Messages API, its request, content blocks, message and token count (its shapes).

A message runs as a chat completion through the one generation pipeline (services/generation/anthropic.py
translates both ways); docs/anthropic.md says which fields Portico honours, which it accepts and ignores, and
why. A field Anthropic's API does not define is a 400 ``unknown_parameter``, as on the chat endpoint.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from portico.schemas.chat import FunctionName, Payload
from portico.schemas.common import MAX_TOKENS_BOUND, RequestModel, StopString


# -- content blocks ----------------------------------------------------------------------------------------
class Block(RequestModel):
    # Prompt caching is the engine's own (prefix reuse); a block's breakpoint is accepted and ignored.
    cache_control: Payload | None = None


class TextBlock(Block):
    type: Literal["text"]
    text: str
    citations: list[Payload] | None = None  # accepted and ignored: Portico cites nothing


class ImageBlock(Block):
    """Refused: the models Portico serves read text (the 400 names the block)."""

    type: Literal["image"]
    source: Payload


class ToolUseBlock(Block):
    """A call the assistant made, sent back in a later turn with its result."""

    type: Literal["tool_use"]
    id: Annotated[str, StringConstraints(min_length=1)]
    name: FunctionName
    input: dict[str, Any]


class ToolResultBlock(Block):
    """What the caller's code answered to the call ``tool_use_id``."""

    type: Literal["tool_result"]
    tool_use_id: Annotated[str, StringConstraints(min_length=1)]
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = None
    is_error: bool | None = None  # accepted; the model reads only the content


ContentBlock = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class MessageParam(RequestModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


# -- tools -------------------------------------------------------------------------------------------------
class ToolDefinition(Block):
    """A client tool (your code runs it); Anthropic's server tools (web search, code execution) have other
    ``type``s and are refused."""

    type: Literal["custom"] | None = None
    name: FunctionName
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoiceAuto(RequestModel):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(RequestModel):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(RequestModel):
    type: Literal["tool"]
    name: FunctionName
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(RequestModel):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


# -- the requests ------------------------------------------------------------------------------------------
class Metadata(RequestModel):
    user_id: Annotated[str, StringConstraints(max_length=256)] | None = None


class CountTokensRequest(RequestModel):
    """POST /v1/messages/count_tokens: the prompt of a message request, counted as the model reads it."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: Annotated[list[ToolDefinition], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    # Accepted and ignored: Portico's models do not think aloud before answering.
    thinking: Payload | None = None


class MessageCreateRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, le=MAX_TOKENS_BOUND)
    stop_sequences: Annotated[list[StopString], Field(max_length=4)] | None = None
    stream: bool = False
    temperature: float = Field(default=1.0, ge=0, le=1)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, description="Accepted and ignored: chat sampling has no top-k.")
    metadata: Metadata | None = None
    # Accepted and ignored: a Portico server has one tier.
    service_tier: Literal["auto", "standard_only"] | None = None


class TokenCount(BaseModel):
    input_tokens: int


# -- the answer --------------------------------------------------------------------------------------------
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseContent(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class MessageUsage(BaseModel):
    """Anthropic's count: ``input_tokens`` excludes the prompt tokens read from the cache, which
    ``cache_read_input_tokens`` counts (their sum is the chat completion's ``prompt_tokens``)."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int = 0


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[Annotated[TextContent | ToolUseContent, Field(discriminator="type")]]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: MessageUsage


class ErrorDetail(BaseModel):
    type: str = Field(description="invalid_request_error, not_found_error, ... (docs/anthropic.md)")
    message: str


class ErrorResponse(BaseModel):
    """Every error of /v1/messages, with Portico's HTTP status (docs/errors.md lists them)."""

    type: Literal["error"] = "error"
    error: ErrorDetail
    request_id: str | None
