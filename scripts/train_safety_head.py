"""Train the safety classifier head (``src/portico/safety/head.py``) on ``src/portico/safety/data/train.jsonl``.

Each text is embedded exactly as Portico serves: the bundled all-MiniLM-L6-v2 through Portico's own
sentence-transformers engine, its word pieces cut to what one forward pass takes. Then one logistic regression
per category (scikit-learn, ``class_weight="balanced"``), its C chosen by 5-fold cross-validated F1 on the
training set alone; the evaluation set (tests/safety/labelled.jsonl) is never read here. Deterministic: the
folds are seeded and lbfgs has no randomness. Writes ``src/portico/safety/data/head.json``.

Run from the repository root (scikit-learn is needed here, not at serve time):

    .venv/bin/python scripts/train_safety_head.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_score, recall_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from portico.engines.sentence_transformers import SentenceTransformersEngine
from portico.safety.policy import Category
from portico.settings import SentenceTransformersModel, default_models

DATA = Path(__file__).resolve().parent.parent / "src" / "portico" / "safety" / "data"
C_GRID = (0.25, 1.0, 4.0, 16.0, 64.0, 256.0)
FOLDS = 5
SEED = 0
DIGITS = 6


def read_rows(path: Path) -> list[tuple[str, set[Category]]]:
    """Each line's text and labels; an unknown label stops the run with its line number."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        try:
            rows.append((row["text"], {Category(label) for label in row["labels"]}))
        except ValueError as exc:
            raise SystemExit(f"{path}:{number}: {exc}") from exc
    return rows


def embeddings_model() -> SentenceTransformersModel:
    """The default embeddings model's settings, whose snapshot id the head records."""
    model = next(model for model in default_models() if isinstance(model, SentenceTransformersModel))
    return model


async def embed(settings: SentenceTransformersModel, texts: Sequence[str]) -> np.ndarray[Any, Any]:
    engine = SentenceTransformersEngine(settings)
    await engine.start()
    try:
        limit = engine.context_window - engine.special_tokens
        return np.asarray(await engine.embed([ids[:limit] for ids in engine.tokenize(texts)]))
    finally:
        await engine.close()


def regression(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, class_weight="balanced", max_iter=10_000)


def fit_label(vectors: np.ndarray[Any, Any], targets: np.ndarray[Any, Any]) -> tuple[float, LogisticRegression]:
    """The C with the best cross-validated F1 (the smaller C on a tie), and the model fitted on every row."""
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    best_c, best_f1, best_predicted = C_GRID[0], -1.0, targets
    for c in C_GRID:
        predicted = cross_val_predict(regression(c), vectors, targets, cv=folds)
        f1 = float(f1_score(targets, predicted))
        if f1 > best_f1:
            best_c, best_f1, best_predicted = c, f1, predicted
    precision = precision_score(targets, best_predicted, zero_division=0)
    recall = recall_score(targets, best_predicted, zero_division=0)
    print(f"  C={best_c:<6g} cross-validated F1 {best_f1:.3f} (precision {precision:.3f}, recall {recall:.3f})")
    return best_c, regression(best_c).fit(vectors, targets)


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the safety classifier head on the labelled training set.")
    parser.add_argument("--data", type=Path, default=DATA / "train.jsonl", help="training set (JSON lines)")
    parser.add_argument("--out", type=Path, default=DATA / "head.json", help="where to write the head")
    args = parser.parse_args()

    rows = read_rows(args.data)
    settings = embeddings_model()
    print(f"{len(rows)} rows from {args.data}; embedding with {settings.snapshot}")
    vectors = asyncio.run(embed(settings, [text for text, _ in rows]))
    labels = list(Category)
    weights, bias, chosen = [], [], {}
    for label in labels:
        targets = np.array([label in row_labels for _, row_labels in rows], dtype=int)
        print(f"{label}: {targets.sum()} positive of {len(targets)}")
        c, model = fit_label(vectors, targets)
        weights.append([round(float(w), DIGITS) for w in model.coef_[0]])
        bias.append(round(float(model.intercept_[0]), DIGITS))
        chosen[label.value] = c
    head = {
        "embedding_model": settings.snapshot,
        "labels": [label.value for label in labels],
        "weights": weights,
        "bias": bias,
        "trained_on": len(rows),
        "c": chosen,
    }
    args.out.write_text(json.dumps(head, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
