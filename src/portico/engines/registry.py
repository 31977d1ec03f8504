"""Served models by name: each public model is an engine plus the admission queue in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

from portico.constants import Capability
from portico.engines.base import Embedder, Engine
from portico.engines.echo import EchoEngine
from portico.engines.scheduler import AdmissionQueue
from portico.errors import ModelNotFound, UnsupportedParameter
from portico.settings import ModelSettings, QueueSettings


def build_engine(settings: ModelSettings) -> Engine | Embedder:
    """The engine named in settings. llama.cpp and PyTorch are imported only when a model uses them."""
    if settings.engine == "echo":
        return EchoEngine(settings)
    if settings.engine == "sentence_transformers":
        from portico.engines.sentence_transformers import SentenceTransformersEngine

        return SentenceTransformersEngine(settings)
    from portico.engines.llama_cpp import LlamaCppEngine

    return LlamaCppEngine(settings)


@dataclass(slots=True)
class ServedModel:
    settings: ModelSettings
    engine: Engine | Embedder
    queue: AdmissionQueue
    ready: bool = False

    @property
    def alias(self) -> str:
        return self.settings.alias

    @property
    def snapshot(self) -> str:
        return self.settings.snapshot

    def generator(self, capability: Capability) -> Engine:
        """The text engine, for a request that needs ``capability``; a 400 naming the model if it lacks it."""
        engine = self.engine
        if isinstance(engine, Embedder) or capability not in engine.capabilities:
            raise self._lacks(capability)
        return engine

    def embedder(self) -> Embedder:
        """The embeddings engine; a 400 naming the model if it makes no embeddings."""
        if not isinstance(self.engine, Embedder):
            raise self._lacks(Capability.EMBEDDINGS)
        return self.engine

    def _lacks(self, capability: Capability) -> UnsupportedParameter:
        offered = ", ".join(sorted(self.engine.capabilities))
        return UnsupportedParameter(
            f"The model '{self.alias}' does not support {capability.value} (it supports: {offered}). "
            "GET /v1/models lists each model's capabilities.",
            param="model",
        )


class ModelRegistry:
    def __init__(self, models: list[ModelSettings], queue: QueueSettings) -> None:
        self._models = []
        for model in models:
            engine = build_engine(model)
            admission = AdmissionQueue(
                slots=engine.slots, max_waiting=queue.max_waiting, wait_timeout_s=queue.wait_timeout_s
            )
            self._models.append(ServedModel(settings=model, engine=engine, queue=admission))
        self._by_name = {name: m for m in self._models for name in (m.alias, m.snapshot)}

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models)

    def resolve(self, name: str) -> ServedModel:
        try:
            return self._by_name[name]
        except KeyError:
            raise ModelNotFound(name) from None

    async def start(self) -> None:
        for model in self._models:
            await model.engine.start()
            model.ready = True

    async def close(self) -> None:
        await asyncio.gather(*(model.engine.close() for model in self._models))
        for model in self._models:
            model.ready = False
