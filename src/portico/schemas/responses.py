"""/v1/responses: OpenAI's Responses API, its request, input items, response object and stream events.

A response runs as a chat completion through the one generation pipeline (services/responses.py translates
both ways); docs/responses.md says which fields Portico honours, which it accepts and ignores, and why.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag

from portico.schemas.chat import FunctionName, Payload
from portico.schemas.common import INT64_MAX, MAX_TOKENS_BOUND, MetadataKey, MetadataValue, RequestModel
from portico.schemas.lists import CursorPage

ItemStatus = Literal["in_progress", "completed", "incomplete"]


# -- input items -------------------------------------------------------------------------------------------
class InputText(RequestModel):
    type: Literal["input_text"]
    text: str


class OutputText(RequestModel):
    """An assistant message's text, as a response's output carries it (sent back as input in a later turn)."""

    type: Literal["output_text"]
    text: str
    annotations: list[Payload] | None = None
    logprobs: list[Payload] | None = None


class Refusal(RequestModel):
    type: Literal["refusal"]
    refusal: str


class InputImage(RequestModel):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto"] | None = None


class InputFile(RequestModel):
    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class InputAudio(RequestModel):
    type: Literal["input_audio"]
    input_audio: Payload


InputContent = Annotated[
    InputText | OutputText | Refusal | InputImage | InputFile | InputAudio, Field(discriminator="type")
]
TEXT_CONTENT = (InputText, OutputText, Refusal)


class MessageItem(RequestModel):
    """A message from the user, the developer (``system`` and ``developer`` are the same here) or an earlier
    assistant turn; ``type`` may be left out, as the SDK's ``{"role": ..., "content": ...}`` shorthand does."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputContent]
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallItem(RequestModel):
    """A call the model made in an earlier turn, sent back with its output."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallOutputItem(RequestModel):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputContent]
    id: str | None = None
    status: ItemStatus | None = None


class ReasoningItem(RequestModel):
    """A reasoning model's summary sent back by clients that replay a whole turn: Portico's models do not
    reason in separate items, so it adds nothing to the prompt."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[Payload] = Field(default_factory=list)
    content: list[Payload] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None


class ItemReference(RequestModel):
    type: Literal["item_reference"]
    id: str


def _item_type(item: Any) -> str | None:
    """An item's ``type``; a ``{"role": ..., "content": ...}`` without one is a message."""
    if isinstance(item, dict):
        return item.get("type", "message" if "role" in item else None)
    return getattr(item, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(_item_type),
]


# -- tools and formats -------------------------------------------------------------------------------------
class FunctionToolSpec(RequestModel):
    type: Literal["function"]
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class HostedTool(RequestModel):
    """A tool OpenAI runs itself (web search, file search, code interpreter, ...): Portico has none of them."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal[
        "web_search",
        "web_search_preview",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "custom",
        "apply_patch",
    ]


ResponseTool = Annotated[FunctionToolSpec | HostedTool, Field(discriminator="type")]


class FunctionToolChoice(RequestModel):
    type: Literal["function"]
    name: FunctionName


ResponseToolChoice = Literal["none", "auto", "required"] | FunctionToolChoice


class TextFormatText(RequestModel):
    type: Literal["text"]


class TextFormatJsonObject(RequestModel):
    type: Literal["json_object"]


class TextFormatJsonSchema(RequestModel):
    type: Literal["json_schema"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")]


class TextConfig(RequestModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(RequestModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class ResponseStreamOptions(RequestModel):
    include_obfuscation: bool | None = None


Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]


# -- the request -------------------------------------------------------------------------------------------
class ResponseCreateRequest(RequestModel):
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    input: str | list[InputItem]
    instructions: str | None = None
    tools: Annotated[list[ResponseTool], Field(max_length=128)] | None = None
    tool_choice: ResponseToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_BOUND)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = Field(default=None, ge=-INT64_MAX - 1, le=INT64_MAX)
    metadata: Metadata | None = None
    store: bool = Field(default=True, description="Keep the response (GET, input_items, previous_response_id).")
    previous_response_id: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    stream: bool = False
    stream_options: ResponseStreamOptions | None = None
    background: bool = False
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    include: list[str] | None = None
    # Accepted and ignored (docs/responses.md says why).
    reasoning: ReasoningConfig | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    safety_identifier: Annotated[str, StringConstraints(max_length=256)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: Payload | None = None
    context_management: list[Payload] | None = None
    # Passed to an upstream model as chat's ``moderation``; an embedded model refuses it (it has none).
    moderation: Payload | None = None
    # Server-side prompt templates and conversations objects: refused (docs/responses.md).
    prompt: Payload | None = None
    conversation: str | Payload | None = None


# -- the response ------------------------------------------------------------------------------------------
class OutputTextPart(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Payload] = Field(default_factory=list)
    logprobs: list[Payload] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputTextPart]


class OutputFunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItem = Annotated[OutputMessage | OutputFunctionCall, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int
    cost: float = Field(description="USD, from the model's prices (0 for a model without prices).")


class ResponseError(BaseModel):
    code: str
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


ResponseStatus = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    background: bool
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None
    max_output_tokens: int | None
    max_tool_calls: int | None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: Payload
    store: bool
    temperature: float
    text: Payload
    tool_choice: str | Payload
    tools: list[Payload]
    top_logprobs: int
    top_p: float
    truncation: Literal["auto", "disabled"]
    usage: ResponseUsage | None = None
    user: str | None
    metadata: dict[str, str]


class StoredItem(BaseModel):
    """An input item as it was sent, with the id Portico gave it if it had none."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str


class InputItemList(CursorPage[StoredItem]):
    """A stored response's input items."""


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: Literal[True] = True
