"""Embeddings: input checks against the model (vocabulary, window, dimensions) before admission.

Every input becomes token ids of the model's own tokenizer before any work starts, so an input that the
model would have to truncate is rejected instead; nothing is silently cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from portico.constants import INLINE_TOKENIZE_CHARS
from portico.engines.base import Embedder
from portico.engines.registry import ServedModel
from portico.errors import ContextLengthExceeded, InvalidRequest, UnsupportedParameter
from portico.schemas.embeddings import EmbeddingRequest


@dataclass(frozen=True, slots=True)
class PreparedEmbedding:
    served: ServedModel
    embedder: Embedder
    inputs: list[list[int]]  # token ids per input, without the special tokens

    @property
    def prompt_tokens(self) -> int:
        """Tokens the model reads, its special tokens included: what the window limits, and what usage counts."""
        return sum(len(tokens) + self.embedder.special_tokens for tokens in self.inputs)


async def prepare_embedding(served: ServedModel, body: EmbeddingRequest) -> PreparedEmbedding:
    """``body`` for ``served``, every input checked against the model."""
    embedder = served.embedder()
    if body.dimensions is not None and body.dimensions != embedder.dimensions:
        raise UnsupportedParameter(
            f"The model '{served.alias}' makes {embedder.dimensions}-dimensional embeddings and cannot make "
            f"{body.dimensions}-dimensional ones. Omit dimensions, or send {embedder.dimensions}.",
            param="dimensions",
        )
    sent = body.inputs()
    for number, item in enumerate(sent):
        if not isinstance(item, str):
            _check_vocabulary(embedder, item, _param(number, len(sent)))
    inputs = await _token_ids(embedder, sent)
    for number, tokens in enumerate(inputs):
        length = len(tokens) + embedder.special_tokens
        if length > embedder.context_window:
            raise ContextLengthExceeded(
                limit=embedder.context_window, prompt_tokens=length, param=_param(number, len(inputs))
            )
    return PreparedEmbedding(served, embedder, inputs)


async def _token_ids(embedder: Embedder, inputs: Sequence[str | list[int]]) -> list[list[int]]:
    """Token ids for every input: texts are tokenized together (one tokenizer call, on a worker thread when
    they are long), ids are kept as sent."""
    texts = [item for item in inputs if isinstance(item, str)]
    if sum(map(len, texts)) > INLINE_TOKENIZE_CHARS:
        tokenized = iter(await asyncio.to_thread(embedder.tokenize, texts))
    else:
        tokenized = iter(embedder.tokenize(texts) if texts else [])
    return [next(tokenized) if isinstance(item, str) else item for item in inputs]


def _param(number: int, count: int) -> str:
    return "input" if count == 1 else f"input[{number}]"


def _check_vocabulary(embedder: Embedder, tokens: Sequence[int], param: str) -> None:
    for token in tokens:
        if not 0 <= token < embedder.vocabulary_size:
            raise InvalidRequest(
                f"{param} holds token id {token}, which this model's tokenizer does not have (its ids are 0 to "
                f"{embedder.vocabulary_size - 1}). Token ids must come from the model's own tokenizer.",
                param=param,
            )
