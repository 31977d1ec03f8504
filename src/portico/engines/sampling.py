"""Per-sequence sampling for the decode loop: the llama.cpp sampler chain a request's settings make, and the
log probabilities OpenAI's ``logprobs`` report, read from the raw logits."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from portico.engines.base import SamplingParams, TokenLogprob, TopToken
from portico.engines.grammar import compiled, json_grammar

# llama.cpp's own sampling defaults for the knobs OpenAI's API does not expose.
TOP_K = 40
MIN_P = 0.05
PENALTY_LAST_N = 64


def sampler_chain(internals: Any, model: Any, n_vocab: int, params: SamplingParams, index: int) -> Any:
    """The chain for choice ``index`` of a request: logit bias, penalties, grammars, then greedy or seeded
    top-k / top-p / min-p / temperature sampling (choice ``index`` seeds with ``seed + index``)."""
    sampler = internals.LlamaSampler()
    if params.logit_bias:
        sampler.add_logit_bias(n_vocab, dict(params.logit_bias))
    sampler.add_penalties(n_vocab, PENALTY_LAST_N, 1.0, params.frequency_penalty, params.presence_penalty)
    if params.json_schema is not None:
        sampler.add_grammar(model, json_grammar(params.json_schema))
    if (grammar := params.grammar) is not None:
        if grammar.trigger is None:
            sampler.add_grammar(model, compiled(grammar.gbnf))
        else:  # free text until the trigger, the grammar from it on
            pattern = rf"[\s\S]*?({re.escape(grammar.trigger)})[\s\S]*"
            sampler.add_grammar_lazy_patterns(model, compiled(grammar.gbnf), [pattern], [])
    if params.temperature == 0:
        sampler.add_greedy()
        return sampler
    seed = random.getrandbits(32) if params.seed is None else (params.seed + index) % 2**32
    sampler.add_top_k(TOP_K)
    sampler.add_top_p(params.top_p, 1)
    sampler.add_min_p(MIN_P, 1)
    sampler.add_temp(params.temperature)
    sampler.add_dist(seed)
    return sampler


def token_logprob(
    logits: np.ndarray[Any, Any], token: int, piece: bytes, top: int, detokenize: Callable[[list[int]], bytes]
) -> TokenLogprob:
    """``token``'s log probability under the model's distribution (``logits``, before the sampling settings
    reshape it), and the ``top`` most likely tokens there."""
    peak = float(logits.max())
    normalizer = peak + math.log(float(np.exp(logits - peak).sum()))
    alternatives: tuple[TopToken, ...] = ()
    if top:
        best = np.argpartition(logits, -top)[-top:]
        best = best[np.argsort(logits[best])[::-1]]
        alternatives = tuple(_top_token(detokenize([int(t)]), float(logits[t]) - normalizer) for t in best)
    return TokenLogprob(token_text(piece), float(logits[token]) - normalizer, tuple(piece), alternatives)


def _top_token(piece: bytes, logprob: float) -> TopToken:
    return TopToken(token_text(piece), logprob, tuple(piece))


def token_text(piece: bytes) -> str:
    """A token's text; a token holding part of a UTF-8 character shows as its bytes (OpenAI's ``bytes``)."""
    return piece.decode("utf-8", errors="backslashreplace")
