"""Content policies on the pipeline: the input checked before a request runs, the output while (or once) it is
generated. docs/safety.md describes what a user sees; this module is where it happens.

Input is the turn's new text — a chat's messages after its last assistant message (user, tool and function
turns; the system and developer prompts are the application's own), a completion's prompts — scored by the
policy's moderation model. A blocking category refuses the request (``ContentPolicyViolation``: the category
names, never scores); a suspected prompt injection warns or blocks, as the policy says.

Output is scored on windows of text deltas: every ``CHECK_EVERY`` deltas of a choice, its last ``WINDOW`` deltas,
before the delta that completes the stride is passed on — so at most ``CHECK_EVERY - 1`` deltas of a
violation go out before the check that catches it — and the rest of a choice before its end is. A stopped
stream ends every choice with ``finish_reason: "content_filter"`` and a warning, then reports its usage; the
generation is cancelled, billed for what it produced. A whole answer is scored sentence by sentence (each with
the one before it) and cut before the first flagged one.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from portico.constants import FinishReason, Priority
from portico.errors import ContentPolicyViolation, UnsupportedParameter
from portico.observability import metrics
from portico.safety.policy import BLOCKABLE, Category, ContentPolicy
from portico.schemas.chat import ChatCompletionRequest
from portico.schemas.moderations import ImageInput, ModerationRequest
from portico.services.generation.types import (
    Answer,
    Call,
    ChoiceEnd,
    Event,
    Moderated,
    PolicyWarning,
    TextDelta,
    TextRequest,
    UsageReport,
)
from portico.usage.meter import Charge

CHECK_EVERY = 16  # text deltas (tokens, for the embedded engine) between output checks
WINDOW = 64  # the deltas each output check scores: the stride's and those before it
_SENTENCE_END = re.compile(r"(?<=[.!?\n])\s+")

# (moderation model, texts, priority) → scores: the pipeline's fallback chain of that model.
Moderate = Callable[[str, list[str], Priority], Awaitable[Moderated]]


def new_input(body: TextRequest) -> list[str]:
    """The texts of the turn that a policy checks (see the module docstring)."""
    if not isinstance(body, ChatCompletionRequest):
        return [prompt for prompt in body.prompts() if prompt]
    last_answer = max((n for n, message in enumerate(body.messages) if message.role == "assistant"), default=-1)
    turn = body.messages[last_answer + 1 :]
    return [text for message in turn if message.role not in ("system", "developer") and (text := message.text())]


def moderation_texts(body: ModerationRequest) -> list[str]:
    """A ``/v1/moderations`` input as texts; image parts are refused (the classifier reads text)."""
    if isinstance(body.input, str):
        return [body.input]
    texts = []
    for n, item in enumerate(body.input):
        if isinstance(item, ImageInput):
            raise UnsupportedParameter(
                "Portico's moderation models read text only; send the image's description or leave it out.",
                param=f"input[{n}].type",
            )
        texts.append(item if isinstance(item, str) else item.text)
    return texts


def _worst(moderated: Moderated) -> dict[Category, float]:
    """Each category's highest score over the texts (a category the model does not score: 0)."""
    return {
        category: max((scores.get(category.value, 0.0) for scores in moderated.scores), default=0.0)
        for category in Category
    }


def outcome(kind: str, categories: list[str]) -> str:
    """A usage record's ``outcome``: ``content_policy_violation:hate,violence``."""
    return f"{kind}:{','.join(categories)}"


class Guard:
    def __init__(self, moderate: Moderate) -> None:
        self._moderate = moderate

    async def flagged(self, policy: ContentPolicy, texts: list[str], priority: Priority) -> list[str]:
        """The blocking categories the texts reach (at their worst), in the policy's order."""
        scores = _worst(await self._moderate(policy.model, texts, priority))
        return [category.value for category in policy.blocks(scores)]

    # -- input -----------------------------------------------------------------------------------------------
    async def screen(self, call: Call, policy: ContentPolicy) -> PolicyWarning | None:
        """Refuse input the policy blocks; a warning for a suspected injection the policy lets through."""
        texts = new_input(call.body)
        checks_input = policy.check in ("input", "both") and bool(policy.categories)
        if not texts or not (checks_input or policy.injection != "off"):
            return None
        scores = _worst(await self._moderate(policy.model, texts, call.priority))
        blocked = [category.value for category in policy.blocks(scores)] if checks_input else []
        injected = policy.injection != "off" and scores[Category.PROMPT_INJECTION] >= policy.injection_threshold
        if injected and policy.injection == "block":
            blocked.append(Category.PROMPT_INJECTION.value)
        if blocked:
            metrics.content_policy_acted("input", "blocked", blocked)
            raise ContentPolicyViolation(blocked)
        if injected:
            metrics.content_policy_acted("input", "warned", [Category.PROMPT_INJECTION.value])
            return PolicyWarning("prompt_injection", (Category.PROMPT_INJECTION.value,))
        return None

    # -- output ----------------------------------------------------------------------------------------------
    async def reviewed(self, answer: Answer, call: Call, policy: ContentPolicy, charge: Charge) -> Answer:
        """The answer with each flagged choice cut before its first flagged sentence (``stop``), or a
        ``ContentPolicyViolation`` (``fail``)."""
        choices = list(answer.choices)
        stopped: list[str] = []
        for n, choice in enumerate(choices):
            if not choice.text or not await self.flagged(policy, [choice.text], call.priority):
                continue
            sentences = _SENTENCE_END.split(choice.text)
            pairs = [" ".join(sentences[max(0, i - 1) : i + 1]) for i in range(len(sentences))]
            moderated = await self._moderate(policy.model, pairs, call.priority)
            first, categories = len(sentences), [c.value for c in BLOCKABLE if c in policy.categories]
            for i, scores in enumerate(moderated.scores):
                hits = policy.blocks({category: scores.get(category.value, 0.0) for category in Category})
                if hits:
                    first, categories = i, [category.value for category in hits]
                    break
            if policy.on_output == "fail":
                metrics.content_policy_acted("output", "failed", categories)
                charge.mark(outcome("content_policy_violation", categories))
                raise ContentPolicyViolation(categories, output=True)
            metrics.content_policy_acted("output", "stopped", categories)
            warning = PolicyWarning("content_filter", tuple(categories))
            kept = " ".join(sentences[:first])
            choices[n] = replace(choice, text=kept, finish_reason=FinishReason.CONTENT_FILTER, warning=warning)
            stopped += [category for category in categories if category not in stopped]
        if stopped:
            charge.mark(outcome("content_filter", stopped))
        return replace(answer, choices=choices)

    def watched(
        self, events: AsyncGenerator[Event, None], call: Call, policy: ContentPolicy, charge: Charge
    ) -> AsyncGenerator[Event, None]:
        return _Watch(self, call, policy, charge).run(events)


@dataclass(slots=True)
class _Watch:
    """One stream's output check (see the module docstring)."""

    guard: Guard
    call: Call
    policy: ContentPolicy
    charge: Charge
    recent: dict[int, deque[str]] = field(default_factory=dict)
    unchecked: dict[int, int] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)

    async def run(self, events: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
        flagged: list[str] = []
        async with aclosing(events) as source:
            async for event in source:
                if isinstance(event, TextDelta):
                    self.recent.setdefault(event.index, deque(maxlen=WINDOW)).append(event.text)
                    self.unchecked[event.index] = self.unchecked.get(event.index, 0) + 1
                    if self.unchecked[event.index] >= CHECK_EVERY and (flagged := await self._check(event.index)):
                        break
                elif isinstance(event, ChoiceEnd):
                    if self.unchecked.get(event.index) and (flagged := await self._check(event.index)):
                        break
                    self.ended.add(event.index)
                yield event
        if not flagged:
            return
        # The source is closed: the generation is cancelled and its usage counted.
        self.charge.mark(outcome("content_filter", flagged))
        warning = PolicyWarning("content_filter", tuple(flagged))
        for index in range(_choices(self.call)):
            if index not in self.ended:
                yield ChoiceEnd(index, FinishReason.CONTENT_FILTER, warning)
        yield UsageReport(self.charge.used)

    async def _check(self, index: int) -> list[str]:
        self.unchecked[index] = 0
        text = "".join(self.recent[index]) if index in self.recent else ""
        if not text.strip():
            return []
        flagged = await self.guard.flagged(self.policy, [text], self.call.priority)
        if flagged and self.policy.on_output == "fail":
            metrics.content_policy_acted("output", "failed", flagged)
            self.charge.mark(outcome("content_policy_violation", flagged))
            raise ContentPolicyViolation(flagged, output=True)
        if flagged:
            metrics.content_policy_acted("output", "stopped", flagged)
        return flagged


def _choices(call: Call) -> int:
    body = call.body
    return body.n if isinstance(body, ChatCompletionRequest) else body.n * len(body.prompts())
