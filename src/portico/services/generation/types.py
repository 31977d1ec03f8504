"""What flows through the generation pipeline: the call, the stream events, the answers, and the backend
interface every model (local, upstream, a fallback chain) implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from portico.constants import CacheStatus, FinishReason, Priority
from portico.engines.base import TokenLogprob as TokenLogprob  # re-exported: the pipeline's logprob type
from portico.engines.base import TopToken as TopToken
from portico.schemas.chat import ChatCompletionRequest
from portico.schemas.common import ContentWarning
from portico.schemas.completions import CompletionRequest
from portico.schemas.embeddings import EmbeddingRequest
from portico.usage.meter import Charge
from portico.usage.tokens import TokenUsage

ENDPOINT_CHAT = "/v1/chat/completions"
ENDPOINT_COMPLETIONS = "/v1/completions"
ENDPOINT_EMBEDDINGS = "/v1/embeddings"
ENDPOINT_PREDICT = "/v1/models/{model}/predict"
# Every generation of a conversation (answers and summaries) is metered under this endpoint.
ENDPOINT_CONVERSATION_MESSAGES = "/v1/conversations/{id}/messages"
ENDPOINT_RESPONSES = "/v1/responses"
# Anthropic's Messages API (its generations; count_tokens generates nothing and is not metered).
ENDPOINT_MESSAGES = "/v1/messages"
ENDPOINT_MODERATIONS = "/v1/moderations"

TextRequest = ChatCompletionRequest | CompletionRequest
# Called with (choice index, text) as a generation makes text: job events and partial output.
OnDelta = Callable[[int, str], None]


@dataclass(frozen=True, slots=True)
class Call:
    """One text generation to run: the request as validated, under which endpoint it is metered, and how."""

    body: TextRequest
    endpoint: str
    priority: Priority = Priority.INTERACTIVE
    timeout_s: float | None = None  # None: the interactive request_timeout_s
    on_delta: OnDelta | None = None
    moderated: bool = True  # under the caller's content policy (not Portico's own calls, e.g. summaries)

    @property
    def chat(self) -> bool:
        return isinstance(self.body, ChatCompletionRequest)


# -- stream events -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TextDelta:
    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens that made ``text``, when the request asked


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """Part of choice ``index``'s tool call number ``call``: its first delta has ``id`` and ``name``, the
    following ones fragments of its JSON ``arguments``, in order."""

    index: int
    call: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class PolicyWarning:
    """A content policy's warning: output stopped (``content_filter``) or a suspected prompt injection."""

    code: Literal["content_filter", "prompt_injection"]
    categories: tuple[str, ...]

    @property
    def message(self) -> str:
        if self.code == "content_filter":
            return "The output was stopped by the project's content policy."
        return "The input looks like a prompt injection attempt; treat instructions inside it with care."

    def wire(self) -> ContentWarning:
        return ContentWarning(code=self.code, message=self.message, categories=list(self.categories))


@dataclass(frozen=True, slots=True)
class ChoiceEnd:
    index: int
    finish_reason: FinishReason
    warning: PolicyWarning | None = None  # the content policy that stopped it


@dataclass(frozen=True, slots=True)
class UsageReport:
    """The last event of a stream that ended well: what it used, over all its choices."""

    usage: TokenUsage


Event = TextDelta | ToolCallDelta | ChoiceEnd | UsageReport


# -- answers ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Origin:
    """Who answered: the snapshot the answer is named after, and the deployment (X-Served-By)."""

    snapshot: str
    served_by: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True, slots=True)
class Choice:
    text: str
    finish_reason: FinishReason
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None  # None: not asked for
    warning: PolicyWarning | None = None  # the content policy that cut it


@dataclass(frozen=True, slots=True)
class Answer:
    choices: list[Choice]
    usage: TokenUsage
    origin: Origin


@dataclass(frozen=True, slots=True)
class Vectors:
    vectors: list[list[float]]
    prompt_tokens: int
    origin: Origin


@dataclass(frozen=True, slots=True)
class Moderated:
    """Each text's category scores (0-1), keyed by category name as the moderation model names them."""

    scores: list[dict[str, float]]
    tokens: int
    origin: Origin


@dataclass(slots=True)
class Opened:
    """A stream that is admitted and under way (an upstream's first event has arrived): what fails from here
    on is an error event in the stream. ``abandon`` frees what it holds if its events are never read."""

    events: AsyncGenerator[Event, None]
    origin: Origin
    abandon: Callable[[], None] = field(default=lambda: None)


class Backend(Protocol):
    """A model as the pipeline sees it. Each method checks the request, admits it through ``charge`` (which
    reserves against the limits once, or re-targets for a fallback) and counts its usage there; settling is
    the caller's."""

    async def complete(self, call: Call, charge: Charge) -> Answer: ...

    async def stream(self, call: Call, charge: Charge) -> Opened: ...

    async def embed(self, body: EmbeddingRequest, charge: Charge, priority: Priority) -> Vectors: ...

    async def moderate(self, texts: list[str], charge: Charge | None, priority: Priority) -> Moderated:
        """Scores for ``texts``. With a ``charge`` (``/v1/moderations``) the request is admitted and counted
        through it; without one it is part of another request (a content policy's check)."""
        ...

    async def check(self, body: TextRequest | EmbeddingRequest) -> None:
        """Refuse now what ``complete``/``embed`` would refuse before running (nothing is admitted)."""


@dataclass(frozen=True, slots=True)
class CacheOutcome:
    status: CacheStatus = CacheStatus.BYPASS
    similarity: float | None = None  # a semantic hit's similarity (X-Cache-Similarity)


@dataclass(slots=True)
class Transcript:
    """A stream's events gathered into whole choices: text, tool calls, logprobs and finish reasons."""

    logprobs: bool = False  # keep each choice's logprobs (the request asked for them)
    texts: dict[int, list[str]] = field(default_factory=dict)
    calls: dict[int, dict[int, list[str]]] = field(default_factory=dict)  # choice -> call -> [id, name, *arguments]
    tokens: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    ends: dict[int, FinishReason] = field(default_factory=dict)
    usage: TokenUsage = field(default_factory=TokenUsage)

    def add(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self.texts.setdefault(event.index, []).append(event.text)
            self.tokens.setdefault(event.index, []).extend(event.logprobs)
        elif isinstance(event, ToolCallDelta):
            parts = self.calls.setdefault(event.index, {}).setdefault(event.call, [event.id or "", event.name or ""])
            parts.append(event.arguments)
        elif isinstance(event, ChoiceEnd):
            self.ends[event.index] = event.finish_reason
        else:
            self.usage = event.usage

    def choices(self) -> list[Choice]:
        """The ended choices, in index order."""
        return [
            Choice(
                "".join(self.texts.get(index, [])),
                self.ends[index],
                tuple(
                    ToolCall(parts[0], parts[1], "".join(parts[2:]))
                    for _, parts in sorted(self.calls.get(index, {}).items())
                ),
                tuple(self.tokens.get(index, [])) if self.logprobs else None,
            )
            for index in sorted(self.ends)
        ]
