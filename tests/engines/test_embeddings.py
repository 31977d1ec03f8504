"""The sentence-transformers engine with the real all-MiniLM-L6-v2: meaning, shape, fidelity and batching."""

from __future__ import annotations

import asyncio
import math

import pytest

from portico.engines.sentence_transformers import SentenceTransformersEngine, bundled_model_dir

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="session")]

GUITAR = "A man is playing a guitar."
GUITAR_AGAIN = "Someone plays an acoustic guitar on stage."
MARKETS = "Stock markets fell sharply after the interest rate decision."


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def embed_texts(engine: SentenceTransformersEngine, texts: list[str]) -> list[list[float]]:
    return await engine.embed(engine.tokenize(texts))


async def test_similar_sentences_are_closer_than_unrelated_ones(minilm_engine: SentenceTransformersEngine) -> None:
    guitar, guitar_again, markets = await embed_texts(minilm_engine, [GUITAR, GUITAR_AGAIN, MARKETS])

    assert cosine(guitar, guitar_again) > 0.5
    assert cosine(guitar, guitar_again) > cosine(guitar, markets) + 0.3


async def test_vectors_have_384_dimensions_and_unit_norm(minilm_engine: SentenceTransformersEngine) -> None:
    (vector,) = await embed_texts(minilm_engine, [GUITAR])

    assert minilm_engine.dimensions == len(vector) == 384
    assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-5)
    # The window and the framing come from the model: 256 word pieces, [CLS] and [SEP] included.
    assert (minilm_engine.context_window, minilm_engine.special_tokens) == (256, 2)
    assert minilm_engine.vocabulary_size == 30522


async def test_vectors_match_the_sentence_transformers_library(minilm_engine: SentenceTransformersEngine) -> None:
    """Token ids in, framed and padded by the engine, give what the library's own encode() gives for the text."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(bundled_model_dir()), device="cpu", local_files_only=True)
    texts = [GUITAR, MARKETS + " " + GUITAR_AGAIN]  # different lengths, so the shorter one is padded

    expected = reference.encode(texts).tolist()
    ours = await embed_texts(minilm_engine, texts)

    for mine, theirs in zip(ours, expected, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-5)


async def test_concurrent_calls_share_forward_passes(minilm_engine: SentenceTransformersEngine) -> None:
    sentences = [f"Sentence number {i} is about {topic}." for i, topic in enumerate("abcdefgh")]
    alone = [(await embed_texts(minilm_engine, [s]))[0] for s in sentences]
    passes_before = minilm_engine.stats.forward_passes

    together = await asyncio.gather(*(embed_texts(minilm_engine, [s]) for s in sentences))

    assert minilm_engine.stats.forward_passes - passes_before < len(sentences)
    for (vector,), expected in zip(together, alone, strict=True):
        assert vector == pytest.approx(expected, abs=1e-5)


async def test_more_inputs_than_max_batch_take_several_passes(minilm_engine: SentenceTransformersEngine) -> None:
    passes_before = minilm_engine.stats.forward_passes

    vectors = await embed_texts(minilm_engine, [f"item {i}" for i in range(70)])

    assert len(vectors) == 70
    assert minilm_engine.stats.forward_passes - passes_before == 3  # 32 + 32 + 6
