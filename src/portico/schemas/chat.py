"""/v1/chat/completions: requests, responses and stream chunks (OpenAI's shapes).

The request takes every field of OpenAI's chat request schema (docs/api.md says which Portico honours and which
it accepts and ignores, with why); a name OpenAI does not define is a 400 ``unknown_parameter``. Values an
embedded model cannot serve (image or audio input, audio output, web search, custom tools) are refused when the
request is prepared for it, naming the parameter; an upstream model gets them passed through.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from portico.schemas.common import (
    MAX_TOKENS_BOUND,
    FieldError,
    GenerationFields,
    RequestModel,
    ResponseFormat,
    Usage,
    Warnings,
)

FunctionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Payload = dict[str, Any]  # a part Portico passes upstream as it came and never reads itself


# -- message content ---------------------------------------------------------------------------------------
class TextPart(RequestModel):
    type: Literal["text"]
    text: str


class ImagePart(RequestModel):
    type: Literal["image_url"]
    image_url: Payload


class AudioPart(RequestModel):
    type: Literal["input_audio"]
    input_audio: Payload


class FilePart(RequestModel):
    type: Literal["file"]
    file: Payload


class RefusalPart(RequestModel):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[TextPart | ImagePart | AudioPart | FilePart | RefusalPart, Field(discriminator="type")]
# Parts a text model reads; the others need a model that sees images, hears audio or reads files.
TEXT_PARTS = (TextPart, RefusalPart)


# -- tools -------------------------------------------------------------------------------------------------
class FunctionDefinition(RequestModel):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="A JSON schema for the arguments; none: the function takes no arguments."
    )
    strict: bool | None = None


class FunctionTool(RequestModel):
    type: Literal["function"]
    function: FunctionDefinition


class CustomTool(RequestModel):
    """A tool with free-form (grammar-defined) input: passed to an upstream model; embedded models refuse it."""

    type: Literal["custom"]
    custom: Payload


Tool = Annotated[FunctionTool | CustomTool, Field(discriminator="type")]


class FunctionChoice(RequestModel):
    name: FunctionName


class NamedToolChoice(RequestModel):
    type: Literal["function"]
    function: FunctionChoice


class NamedCustomToolChoice(RequestModel):
    type: Literal["custom"]
    custom: Payload


class AllowedTools(RequestModel):
    mode: Literal["auto", "required"]
    tools: list[Payload]


class AllowedToolsChoice(RequestModel):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[NamedToolChoice | NamedCustomToolChoice | AllowedToolsChoice, Field(discriminator="type")]
)
FunctionCallChoice = Literal["none", "auto"] | FunctionChoice


class CalledFunction(RequestModel):
    name: str
    arguments: str


class MessageToolCall(RequestModel):
    """A tool call in an assistant message sent back to the model (as the model made it)."""

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


# -- messages ----------------------------------------------------------------------------------------------
class ChatMessage(RequestModel):
    """One message of a chat, any role. Assistant messages may carry ``tool_calls`` (then ``content`` may be
    null); a ``tool`` message answers the call named by ``tool_call_id``; ``function`` is the legacy form."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | Annotated[list[ContentPart], Field(min_length=1)] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None
    function_call: CalledFunction | None = None
    refusal: str | None = None
    audio: Payload | None = None
    # An answer's URL citations: the openai SDK's message.model_dump() sends them back (null); not read.
    annotations: list[Payload] | None = None

    @model_validator(mode="after")
    def _shape_of_its_role(self) -> ChatMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise FieldError("tool_call_id", "a message with role 'tool' needs the id of the call it answers")
        if self.role == "function" and self.name is None:
            raise FieldError("name", "a message with role 'function' needs the name of the function that answered")
        if self.role != "assistant" and (self.tool_calls or self.function_call):
            raise FieldError("tool_calls", "only assistant messages carry tool_calls or function_call")
        speaks = self.tool_calls or self.function_call or self.refusal is not None or self.audio is not None
        if self.content is None and not (self.role == "assistant" and speaks) and self.role != "function":
            raise FieldError("content", "content is required (only an assistant message with tool_calls may omit it)")
        return self

    def text(self) -> str:
        """The text the message holds (text and refusal parts); non-text parts are refused before this."""
        if self.content is None:
            return self.refusal or ""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            part.text if isinstance(part, TextPart) else part.refusal
            for part in self.content
            if isinstance(part, TEXT_PARTS)
        )


# -- the request -------------------------------------------------------------------------------------------
class ChatCompletionRequest(GenerationFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_BOUND)
    response_format: ResponseFormat | None = None
    store: bool | None = Field(
        default=None,
        description="Keep the request and its response (GET /v1/chat/completions/{id}); `metadata` is kept with it.",
    )
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: Annotated[list[FunctionDefinition], Field(max_length=128)] | None = Field(
        default=None, description="Deprecated by OpenAI: read as `tools`."
    )
    function_call: FunctionCallChoice | None = Field(
        default=None, description="Deprecated by OpenAI: read as `tool_choice`."
    )
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: Payload | None = None
    prediction: Payload | None = None
    web_search_options: Payload | None = None
    moderation: Payload | None = None
    # Accepted and ignored (docs/api.md says why).
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    safety_identifier: Annotated[str, StringConstraints(max_length=256)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: Payload | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None

    @model_validator(mode="after")
    def _tool_fields_agree(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise FieldError("top_logprobs", "top_logprobs needs logprobs: true")
        if self.tools is not None and self.functions is not None:
            raise FieldError("functions", "send tools or the deprecated functions, not both")
        return self


# -- the answer --------------------------------------------------------------------------------------------
FinishReasonName = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ToolCallFunction(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON text (valid against the function's parameters).")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


def _absent(value: object) -> bool:
    return value is None


class AssistantMessage(BaseModel):
    """Without calls, OpenAI's message has no ``tool_calls`` (nor ``function_call``) key at all."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, exclude_if=_absent)
    function_call: ToolCallFunction | None = Field(default=None, exclude_if=_absent)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReasonName
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    warnings: Warnings = None


class ToolCallDeltaFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallDeltaFunction | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: FinishReasonName | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
