"""/v1/models and /v1/models/{model}/predict."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from portico.constants import SnapshotStatus
from portico.schemas.common import SamplingFields, Usage
from portico.schemas.lists import ItemList


class ModelSnapshot(BaseModel):
    """One snapshot of a model (docs/versioning.md). Times are Unix seconds (midnight UTC of the dates set)."""

    id: str
    status: SnapshotStatus
    deprecated_at: int | None = None
    sunset_at: int | None = None
    replacement: str | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    snapshot: str = Field(description="The snapshot this name answers as: the current one, unless pinned.")
    context_window: int
    capabilities: list[str]
    snapshots: list[ModelSnapshot] = Field(description="The current snapshot first, then older ones still known.")


class ModelList(ItemList[Model]): ...


class PredictRequest(SamplingFields):
    input: Annotated[str, StringConstraints(min_length=1)]


class Prediction(BaseModel):
    id: str
    object: Literal["prediction"] = "prediction"
    created: int
    model: str
    output: str
    finish_reason: Literal["stop", "length"]
    usage: Usage
