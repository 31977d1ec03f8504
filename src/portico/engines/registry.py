"""Served models by name: each public model is an engine plus the admission queue in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace

from portico.constants import Capability
from portico.engines.base import Classifier, Embedder, Engine
from portico.engines.echo import EchoEngine
from portico.engines.scheduler import AdmissionQueue
from portico.engines.versions import ModelVersion, note_named
from portico.errors import ModelNotFound, ModelRetired, UnsupportedParameter
from portico.settings import (
    ClassifierModel,
    EchoModel,
    ModelSettings,
    QueueSettings,
    SentenceTransformersModel,
    UpstreamModel,
)


def build_engine(settings: ModelSettings) -> Engine | Embedder | Classifier:
    """The engine named in settings. llama.cpp and PyTorch are imported only when a model uses them."""
    if isinstance(settings, EchoModel):
        return EchoEngine(settings)
    if isinstance(settings, UpstreamModel):
        from portico.engines.upstream import UpstreamEngine

        return UpstreamEngine(settings)
    if isinstance(settings, SentenceTransformersModel):
        from portico.engines.sentence_transformers import SentenceTransformersEngine

        return SentenceTransformersEngine(settings)
    if isinstance(settings, ClassifierModel):
        from portico.engines.classifier import SafetyClassifierEngine

        return SafetyClassifierEngine(settings)
    from portico.engines.llama_cpp import LlamaCppEngine

    return LlamaCppEngine(settings)


@dataclass(slots=True)
class ServedModel:
    """A model as a request named it: its engine and queue, and the snapshot answering (``version``)."""

    settings: ModelSettings
    engine: Engine | Embedder | Classifier
    queue: AdmissionQueue
    version: ModelVersion
    ready: bool = False

    @property
    def alias(self) -> str:
        return self.settings.alias

    @property
    def snapshot(self) -> str:
        """The snapshot id reported in responses' ``model``: the current one, or the older one a request pinned."""
        return self.version.snapshot

    def snapshots(self) -> list[ModelVersion]:
        """The current snapshot, then the older ones still named in settings (retired ones included)."""
        current = ModelVersion.of(self.settings.snapshot, self.settings)
        older = [ModelVersion.of(p.id, p, retired=p.retired) for p in self.settings.previous_snapshots]
        return [current, *older]

    def generator(self, capability: Capability) -> Engine:
        """The text engine, for a request that needs ``capability``; a 400 naming the model if it lacks it."""
        engine = self.engine
        if isinstance(engine, Embedder | Classifier) or capability not in engine.capabilities:
            raise self._lacks(capability)
        return engine

    def embedder(self) -> Embedder:
        """The embeddings engine; a 400 naming the model if it makes no embeddings."""
        if not isinstance(self.engine, Embedder):
            raise self._lacks(Capability.EMBEDDINGS)
        return self.engine

    def classifier(self) -> Classifier:
        """The moderation engine; a 400 naming the model if it is not a moderation model."""
        if not isinstance(self.engine, Classifier):
            raise self._lacks(Capability.MODERATION)
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
                slots=engine.slots,
                max_waiting=queue.max_waiting,
                wait_timeout_s=queue.wait_timeout_s,
                model=model.snapshot,
            )
            self._models.append(
                ServedModel(
                    settings=model, engine=engine, queue=admission, version=ModelVersion.of(model.snapshot, model)
                )
            )
        # Every name a request may send → the model and the snapshot it pins (the alias: the current one).
        self._by_name: dict[str, tuple[ServedModel, ModelVersion]] = {}
        for served in self._models:
            self._by_name[served.alias] = (served, served.version)
            for version in served.snapshots():
                self._by_name[version.snapshot] = (served, version)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models)

    def engine_of(self, name: str) -> Engine | Embedder | Classifier | None:
        """The engine answering ``name`` (None if unknown), without resolving it: nothing noted, nothing raised."""
        entry = self._by_name.get(name)
        return None if entry is None else entry[0].engine

    def resolve(self, name: str) -> ServedModel:
        """The model ``name`` addresses, answering as the snapshot it pins; 404 if unknown, 410 if retired.

        Older snapshots are answered by their model's engine (only the reported snapshot differs).
        """
        try:
            served, version = self._by_name[name]
        except KeyError:
            raise ModelNotFound(name) from None
        if version.retired:
            raise ModelRetired(name, version.replacement)
        note_named(version)
        return served if version is served.version else replace(served, version=version)

    def by_alias(self, alias: str) -> ServedModel:
        """The model an alias names, without noting it for the response's version headers (a fallback that may
        never answer: ``note_named`` it when it does). Settings validation guarantees the alias exists."""
        return self._by_name[alias][0]

    def circuits(self) -> dict[str, str]:
        """The circuit state (``closed``, ``open``, ``half_open``) of every upstream deployment, by its name."""
        from portico.engines.upstream import UpstreamEngine

        return {
            deployment.name: deployment.breaker.state.value
            for served in self._models
            if isinstance(served.engine, UpstreamEngine)
            for deployment in served.engine.deployments
        }

    async def start(self) -> None:
        for model in self._models:
            await model.engine.start()
            model.ready = True

    async def close(self) -> None:
        await asyncio.gather(*(model.engine.close() for model in self._models))
        for model in self._models:
            model.ready = False
