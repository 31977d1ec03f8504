"""A deterministic engine that answers with the user's own words: the test double that ships in the package.

It tokenizes on whitespace, reports real usage, honours max_tokens, stop sequences and JSON mode, reports
logprobs (0: each piece is certain), ignores grammars (a user message written as a tool call comes back as
one, which the pipeline reads like a model's), and can be
paced (tokens per second, first-token latency) so tests and load benchmarks can model a real engine.
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import replace

from portico.constants import Capability, FinishReason
from portico.engines.base import (
    ChatPrompt,
    ChatTurn,
    EngineStats,
    Generation,
    GenerationRequest,
    TokenLogprob,
    TopToken,
)
from portico.engines.stops import StopFilter
from portico.settings import EchoModel

_PIECE = re.compile(r"\S+\s*|\s+")
_TURN_START = "<|{role}|>\n"
_TURN_END = "<|end|>\n"
_DEFAULT_CONTEXT_WINDOW = 4096


def split_pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


def _certain(piece: str, top: int | None) -> tuple[TokenLogprob, ...]:
    """Echo's logprobs: it always says the one thing, so each piece has probability 1."""
    if top is None:
        return ()
    raw = tuple(piece.encode())
    return (TokenLogprob(piece, 0.0, raw, (TopToken(piece, 0.0, raw),)[:top]),)


class EchoEngine:
    capabilities = frozenset(
        {
            Capability.CHAT,
            Capability.COMPLETIONS,
            Capability.TOKENIZE,
            Capability.JSON_MODE,
            Capability.TOOLS,
            Capability.LOGPROBS,
        }
    )

    def __init__(self, settings: EchoModel) -> None:
        self.context_window = settings.context_window or _DEFAULT_CONTEXT_WINDOW
        self.slots = settings.parallel_slots
        self._tokens_per_second = settings.echo.tokens_per_second
        self._first_token_latency_s = settings.echo.first_token_latency_ms / 1000
        self.stats = EngineStats()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def tokenize(self, text: str) -> list[int]:
        return [zlib.crc32(piece.encode()) for piece in split_pieces(text)]

    def render_chat(self, turns: Sequence[ChatTurn]) -> ChatPrompt:
        body = "".join(_TURN_START.format(role=t.role) + t.content + "\n" + _TURN_END for t in turns)
        return ChatPrompt(text=body + _TURN_START.format(role="assistant"), stop=(_TURN_END,))

    def generate(self, request: GenerationRequest) -> Generation:
        generation = Generation(asyncio.get_running_loop())
        task = asyncio.create_task(self._produce(request, generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return generation

    def _answer_for(self, request: GenerationRequest) -> str:
        """The last user turn of a chat prompt, or the whole prompt of a plain completion."""
        marker = _TURN_START.format(role="user")
        text = request.prompt
        if marker in text:
            text = text.rsplit(marker, 1)[1].split("\n" + _TURN_END, 1)[0]
        if request.params.json_schema is not None:
            return json.dumps({"echo": text})
        return text

    async def _produce(self, request: GenerationRequest, generation: Generation) -> None:
        self.stats.active_generations += 1
        self.stats.generations_started += 1
        try:
            if self._first_token_latency_s:
                await asyncio.sleep(self._first_token_latency_s)
            if request.prompt_logprobs:
                pieces = split_pieces(request.prompt)
                first = _certain(pieces[0], 0) if pieces else ()
                generation.prompt_logprobs = [
                    *(replace(t, logprob=None) for t in first),
                    *(t for p in pieces[1:] for t in _certain(p, request.params.logprobs or 0)),
                ]
            for index in range(request.n):
                generation.finish_choice(index, await self._emit(request, generation, index))
            generation.finish()
        except Exception as exc:  # a bug here must reach the client as an error event, not hang it
            generation.fail(exc)
        finally:
            self.stats.active_generations -= 1

    async def _emit(self, request: GenerationRequest, generation: Generation, index: int) -> FinishReason:
        stops = StopFilter(request.params.stop)
        for position, piece in enumerate(split_pieces(self._answer_for(request))):
            if position >= request.params.max_tokens:
                return FinishReason.LENGTH
            if self._tokens_per_second and (position or index):
                await asyncio.sleep(1 / self._tokens_per_second)
            if generation.cancelled:
                return FinishReason.CANCELLED
            generation.completion_tokens += 1
            self.stats.tokens_generated += 1
            if text := stops.feed(piece):
                generation.push(index, text, _certain(piece, request.params.logprobs))
            if stops.stopped:
                return FinishReason.STOP
        if tail := stops.flush():
            generation.push(index, tail)
        return FinishReason.STOP
