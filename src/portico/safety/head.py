"""The safety classifier head: one logistic regression per category over sentence embeddings.

It is read from a JSON file that ``scripts/train_safety_head.py`` writes (the bundled one is ``data/head.json``,
trained on ``data/train.jsonl``): ``labels``, one row of ``weights`` per label (as long as a vector), one
``bias`` per label, and the ``embedding_model`` whose vectors it was trained on. A label's score is
``sigmoid(vector · weights[label] + bias[label])``. Serving needs numpy only; scikit-learn only trains it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from portico.errors import EngineError
from portico.safety.policy import Category

BUNDLED_HEAD = Path(__file__).with_name("data") / "head.json"

Matrix = npt.NDArray[np.float64]


class SafetyHead:
    def __init__(self, labels: Sequence[Category], weights: Matrix, bias: Matrix, *, embedding_model: str) -> None:
        if weights.ndim != 2 or weights.shape[0] != len(labels) or weights.shape[1] == 0:
            raise EngineError(
                f"The classifier head's weights must be one row per label ({len(labels)}), each as long as a "
                f"vector; they have shape {weights.shape}."
            )
        if bias.shape != (len(labels),):
            raise EngineError(f"The classifier head needs one bias per label ({len(labels)}); it has {bias.size}.")
        if len(set(labels)) != len(labels):
            raise EngineError("The classifier head names a label more than once.")
        self.labels = tuple(labels)
        self.embedding_model = embedding_model
        self._weights = weights.T  # (dimensions, labels): vectors @ weights is one row of logits per vector
        self._bias = bias

    @property
    def dimensions(self) -> int:
        """The length of the vectors it reads."""
        return int(self._weights.shape[0])

    @classmethod
    def load(cls, path: Path) -> SafetyHead:
        """The head in the JSON file at ``path``."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise EngineError(
                f"No classifier head at {path}. Check `head` in the models configuration, or train one with "
                "scripts/train_safety_head.py."
            ) from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EngineError(f"The classifier head at {path} is not readable JSON: {exc}") from exc
        return cls._from_document(document, path)

    @classmethod
    def bundled(cls) -> SafetyHead:
        """The head that ships in the package, trained on all-MiniLM-L6-v2's vectors."""
        return cls.load(BUNDLED_HEAD)

    @classmethod
    def _from_document(cls, document: Any, path: Path) -> SafetyHead:
        try:
            labels = [Category(label) for label in document["labels"]]
            weights = np.asarray(document["weights"], dtype=np.float64)
            bias = np.asarray(document["bias"], dtype=np.float64)
            embedding_model = str(document["embedding_model"])
        except (KeyError, TypeError, ValueError) as exc:
            # ValueError covers an unknown label and ragged weight rows alike.
            raise EngineError(
                f"The classifier head at {path} is malformed ({exc}); it needs `labels` (categories), "
                "`weights` (one equal-length row per label), `bias` (one per label) and `embedding_model`."
            ) from exc
        return cls(labels, weights, bias, embedding_model=embedding_model)

    def scores(self, vectors: Sequence[Sequence[float]]) -> list[dict[Category, float]]:
        """Each vector's score per label, from 0 to 1, in order."""
        if len(vectors) == 0:
            return []
        try:
            inputs = np.asarray(vectors, dtype=np.float64)
        except ValueError as exc:  # vectors of different lengths
            raise EngineError(f"The classifier head was given vectors of different lengths: {exc}") from exc
        if inputs.ndim != 2 or inputs.shape[1] != self.dimensions:
            raise EngineError(
                f"The classifier head reads {self.dimensions}-dimensional vectors (from '{self.embedding_model}'); "
                f"it was given vectors of shape {inputs.shape}."
            )
        logits = inputs @ self._weights + self._bias
        # The tanh form of the sigmoid: no overflow for large negative logits.
        probabilities = 0.5 * (1.0 + np.tanh(0.5 * logits))
        return [dict(zip(self.labels, row.tolist(), strict=True)) for row in probabilities]
