"""Content-safety classifiers on Portico's labelled evaluation set (tests/safety/labelled.jsonl), in one run.

What is measured, each text scored once at threshold 0.5:

- **Portico's head**: the bundled all-MiniLM-L6-v2 through Portico's own sentence-transformers engine (serving
  defaults: one PyTorch thread, the 5 ms micro-batch window) and the bundled classifier head. Per category:
  precision, recall, F1; and the benign false-positive rate (benign rows with any category at 0.5 or above).
- **alt-profanity-check**: its binary ``predict`` ("offensive") against "any of harassment, hate, sexual,
  violence"; Portico's head is scored on the same question next to it.
- **jailguard**: its ``is_injection`` against ``prompt_injection``. It downloads a 90 MB MiniLM ONNX file on first
  use; offline it runs only from a directory holding ``all-MiniLM-L6-v2.onnx`` (``--jailguard-model-dir``), which
  ``--export-jailguard-onnx DIR`` writes from Portico's bundled MiniLM (that needs the ``onnx`` package). It runs
  in a subprocess: its Rust core panics when the model is missing, and reads the directory once.

Speed, per arm on this CPU: classifications/s one text per call and 32 per call (the first 256 texts of the set,
cycled), and the p50/p99 latency of one short text over ``--runs`` calls after a warm-up. A candidate that is not
installed or cannot run offline gets a row saying why. Sizes are installed sizes (the dist-info RECORD), licences
the dist-info METADATA's.

Run from the repository root:

    .venv/bin/python benchmarks/safety_eval.py --markdown
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.table import Table

from portico.engines.sentence_transformers import BUNDLED_MODEL_PACKAGE, SentenceTransformersEngine, bundled_model_dir
from portico.safety.head import BUNDLED_HEAD, SafetyHead
from portico.safety.policy import Category
from portico.settings import SentenceTransformersModel

LABELLED = Path(__file__).resolve().parent.parent / "tests" / "safety" / "labelled.jsonl"
THRESHOLD = 0.5
OFFENSIVE = frozenset({Category.HARASSMENT, Category.HATE, Category.SEXUAL, Category.VIOLENCE})
JAILGUARD_ONNX = "all-MiniLM-L6-v2.onnx"
SHORT_TEXT = "How do I kill a Python process that is stuck?"
SPEED_TEXTS = 256
BATCH = 32
QUALITY_COLUMNS = ["category", "positives", "precision", "recall", "F1"]
COMPARE_COLUMNS = [
    "classifier",
    "scored against",
    "installed size",
    "licence",
    "precision",
    "recall",
    "F1",
    "benign flagged",
    "batch 1 (texts/s)",
    "batch 32 (texts/s)",
    "p50 / p99 one text (ms)",
]

console = Console(soft_wrap=True)
Classify = Callable[[list[str]], Awaitable[list[bool]]]


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    labels: frozenset[Category]


@dataclass(frozen=True, slots=True)
class Counts:
    true_positives: int
    false_positives: int
    false_negatives: int

    @classmethod
    def of(cls, predicted: Sequence[bool], truth: Sequence[bool]) -> Counts:
        pairs = list(zip(predicted, truth, strict=True))
        return cls(
            sum(p and t for p, t in pairs), sum(p and not t for p, t in pairs), sum(t and not p for p, t in pairs)
        )

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 0.0

    @property
    def recall(self) -> float:
        positives = self.true_positives + self.false_negatives
        return self.true_positives / positives if positives else 0.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


@dataclass(frozen=True, slots=True)
class Speed:
    batch_1_per_s: float
    batch_32_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class Comparison:
    name: str
    target: str
    predicted: list[bool] | None  # None: it did not run, ``note`` says why
    speed: Speed | None
    size: str
    licence: str
    note: str = ""  # printed under the table
    reason: str = ""  # why it did not run, in its row


def read_rows(path: Path) -> list[Row]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Row(row["text"], frozenset(Category(label) for label in row["labels"])) for row in map(json.loads, lines)]


async def measure_speed(classify: Classify, texts: Sequence[str], runs: int) -> Speed:
    """Classifications/s one text per call and ``BATCH`` per call, and one short text's latency percentiles."""
    sample = [texts[i % len(texts)] for i in range(SPEED_TEXTS)]
    await classify([SHORT_TEXT])  # warm-up
    start = time.perf_counter()
    for text in sample:
        await classify([text])
    batch_1 = len(sample) / (time.perf_counter() - start)
    start = time.perf_counter()
    for at in range(0, len(sample), BATCH):
        await classify(sample[at : at + BATCH])
    batch_32 = len(sample) / (time.perf_counter() - start)
    latencies = []
    for _ in range(runs):
        start = time.perf_counter()
        await classify([SHORT_TEXT])
        latencies.append((time.perf_counter() - start) * 1000)
    percentiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return Speed(batch_1, batch_32, statistics.median(latencies), percentiles[98])


# -- Portico's head ------------------------------------------------------------------------------------
async def score_with_portico(rows: Sequence[Row], runs: int) -> tuple[list[dict[Category, float]], Speed]:
    engine = SentenceTransformersEngine(SentenceTransformersModel(alias="all-minilm-l6-v2", snapshot="safety-eval"))
    await engine.start()
    head = SafetyHead.bundled()
    limit = engine.context_window - engine.special_tokens

    async def scores(texts: Sequence[str]) -> list[dict[Category, float]]:
        vectors = await engine.embed([ids[:limit] for ids in engine.tokenize(texts)])
        return head.scores(vectors)

    async def flags(texts: list[str]) -> list[bool]:
        return [max(score.values()) >= THRESHOLD for score in await scores(texts)]

    try:
        texts = [row.text for row in rows]
        return await scores(texts), await measure_speed(flags, texts, runs)
    finally:
        await engine.close()


def portico_size() -> str:
    minilm = installed_size(BUNDLED_MODEL_PACKAGE)
    return f"{BUNDLED_HEAD.stat().st_size / 1e3:.0f} kB head (+ {minilm} MiniLM, shipped already)"


# -- alt-profanity-check -------------------------------------------------------------------------------
def compare_profanity_check(rows: Sequence[Row], runs: int) -> Comparison:
    name, target = "alt-profanity-check", "any of harassment/hate/sexual/violence"
    try:
        from profanity_check import predict
    except ImportError:
        return not_installed(name, target, "alt-profanity-check")

    async def flags(texts: list[str]) -> list[bool]:
        return [bool(value) for value in predict(texts)]

    predicted = asyncio.run(flags([row.text for row in rows]))
    speed = asyncio.run(measure_speed(flags, [row.text for row in rows], runs))
    return Comparison(name, target, predicted, speed, installed_size(name), licence_of(name), "offline: yes")


# -- jailguard -----------------------------------------------------------------------------------------
def compare_jailguard(rows: Sequence[Row], runs: int, model_dir: Path | None) -> Comparison:
    name, target = "jailguard", "prompt_injection"
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return not_installed(name, target, name)
    size, licence = installed_size(name), licence_of(name)
    if model_dir is None or not (model_dir / JAILGUARD_ONNX).is_file():
        note = (
            f"not run: it downloads its MiniLM ONNX embedder (~90 MB) on first use; offline it needs {JAILGUARD_ONNX} "
            "in --jailguard-model-dir (--export-jailguard-onnx DIR writes one from Portico's bundled MiniLM)"
        )
        return Comparison(name, target, None, None, size, licence, note, "not run: downloads its model")
    request = json.dumps({"texts": [row.text for row in rows], "runs": runs})
    # No network for its downloader, should the file be rejected: an invalid proxy fails at once.
    environment = {**os.environ, "JAILGUARD_MODEL_DIR": str(model_dir), "HTTPS_PROXY": "http://127.0.0.1:9"}
    worker = subprocess.run(
        [sys.executable, __file__, "--jailguard-worker"],
        input=request,
        capture_output=True,
        text=True,
        env=environment,
        timeout=1800,
        check=False,
    )
    if worker.returncode != 0:
        last = (worker.stderr.strip().splitlines() or ["no output"])[-1]
        note = f"failed offline: {last[:200]}"
        return Comparison(name, target, None, None, size, licence, note, "failed offline (see below)")
    answer = json.loads(worker.stdout)
    note = f"offline only with a local {JAILGUARD_ONNX} (here: exported from Portico's MiniLM)"
    return Comparison(name, target, answer["predicted"], Speed(**answer["speed"]), size, licence, note)


def jailguard_worker() -> None:
    """The subprocess side: texts in on stdin, ``is_injection`` for each and the speed out on stdout."""
    import jailguard

    request = json.loads(sys.stdin.read())

    async def flags(texts: list[str]) -> list[bool]:
        return [bool(result.is_injection) for result in jailguard.detect_batch(texts)]

    predicted = asyncio.run(flags(request["texts"]))
    speed = asyncio.run(measure_speed(flags, request["texts"], request["runs"]))
    print(json.dumps({"predicted": predicted, "speed": asdict(speed)}))


def export_jailguard_onnx(directory: Path) -> Path:
    """Portico's bundled all-MiniLM-L6-v2 as the ONNX file jailguard loads (token embeddings out; it pools)."""
    try:
        import onnx  # noqa: F401 (torch's exporter needs it)
    except ImportError as exc:
        raise SystemExit("--export-jailguard-onnx needs the onnx package (pip install onnx)") from exc
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(bundled_model_dir()), local_files_only=True).eval()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            hidden: torch.Tensor = output.last_hidden_state
            return hidden

    ids = torch.tensor([[101, 7592, 2088, 102]])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / JAILGUARD_ONNX
    torch.onnx.export(
        TokenEmbeddings(),
        (ids, torch.ones_like(ids), torch.zeros_like(ids)),
        str(path),
        input_names=names,
        output_names=["last_hidden_state"],
        dynamic_axes={name: {0: "batch_size", 1: "sequence_length"} for name in [*names, "last_hidden_state"]},
        opset_version=14,
        dynamo=False,
    )
    return path


# -- package facts -------------------------------------------------------------------------------------
def installed_size(name: str) -> str:
    files = metadata.distribution(name).files or []
    total = sum(file.size or 0 for file in files)
    return f"{total / 1e6:.1f} MB"


def licence_of(name: str) -> str:
    """The dist-info's licence: its expression or field, else its OSI classifiers."""
    fields = metadata.distribution(name).metadata
    declared = (fields.get_all("License-Expression") or []) + (fields.get_all("License") or [])
    if declared and len(declared[0]) < 60:
        return str(declared[0])
    classifiers = [value.rsplit(" :: ", 1)[-1] for value in fields.get_all("Classifier") or [] if "License" in value]
    return " / ".join(classifiers) or "not stated"


def not_installed(name: str, target: str, package: str) -> Comparison:
    note = f"not installed (pip install --no-deps {package})"
    return Comparison(name, target, None, None, "-", "-", note, "not installed")


# -- report --------------------------------------------------------------------------------------------
def quality_cells(rows: Sequence[Row], scores: Sequence[dict[Category, float]]) -> list[list[str]]:
    cells = []
    for category in Category:
        truth = [category in row.labels for row in rows]
        counts = Counts.of([score[category] >= THRESHOLD for score in scores], truth)
        cells.append(
            [category.value, str(sum(truth)), f"{counts.precision:.2f}", f"{counts.recall:.2f}", f"{counts.f1:.2f}"]
        )
    benign = [max(score.values()) >= THRESHOLD for row, score in zip(rows, scores, strict=True) if not row.labels]
    cells.append(["benign flagged (false-positive rate)", str(len(benign)), "", f"{sum(benign) / len(benign):.2f}", ""])
    return cells


def comparison_cells(rows: Sequence[Row], comparison: Comparison, targets: frozenset[Category]) -> list[str]:
    head = [comparison.name, comparison.target, comparison.size, comparison.licence]
    if comparison.predicted is None or comparison.speed is None:
        return [*head, comparison.reason, "", "", "", "", "", ""]
    truth = [bool(row.labels & targets) for row in rows]
    counts = Counts.of(comparison.predicted, truth)
    benign = [flag for flag, row in zip(comparison.predicted, rows, strict=True) if not row.labels]
    speed = comparison.speed
    return [
        *head,
        f"{counts.precision:.2f}",
        f"{counts.recall:.2f}",
        f"{counts.f1:.2f}",
        f"{sum(benign) / len(benign):.2f}",
        f"{speed.batch_1_per_s:.0f}",
        f"{speed.batch_32_per_s:.0f}",
        f"{speed.p50_ms:.1f} / {speed.p99_ms:.1f}",
    ]


def print_markdown(columns: list[str], cells: list[list[str]], left: int) -> None:
    """A Markdown table whose first ``left`` columns are text (left-aligned), the rest numbers."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join([":---"] * left + ["---:"] * (len(columns) - left)) + "|")
    for row in cells:
        print("| " + " | ".join(row) + " |")
    print()


def print_rich(columns: list[str], cells: list[list[str]], left: int, title: str) -> None:
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < left else "right")
    for row in cells:
        table.add_row(*row)
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Portico's safety classifier and the candidates, on one labelled set.")
    parser.add_argument(
        "--data", type=Path, default=LABELLED, help="labelled set (default: tests/safety/labelled.jsonl)"
    )
    parser.add_argument(
        "--runs", type=int, default=200, help="timed calls of one short text, for p50/p99 (default: 200)"
    )
    parser.add_argument("--jailguard-model-dir", type=Path, help=f"a directory holding jailguard's {JAILGUARD_ONNX}")
    parser.add_argument(
        "--export-jailguard-onnx", type=Path, metavar="DIR", help="write that file from Portico's MiniLM first"
    )
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the docs)")
    parser.add_argument("--jailguard-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.jailguard_worker:
        jailguard_worker()
        return
    if args.export_jailguard_onnx:
        console.print(f"exported {export_jailguard_onnx(args.export_jailguard_onnx)}", style="dim")
        args.jailguard_model_dir = args.export_jailguard_onnx
    rows = read_rows(args.data)
    console.print(
        f"{len(rows)} labelled rows from {args.data}; threshold {THRESHOLD}; {os.cpu_count()} cores", style="dim"
    )
    scores, speed = asyncio.run(score_with_portico(rows, args.runs))
    injection = frozenset({Category.PROMPT_INJECTION})

    def portico(target: str, categories: frozenset[Category]) -> Comparison:
        predicted = [any(score[category] >= THRESHOLD for category in categories) for score in scores]
        return Comparison("Portico head", target, predicted, speed, portico_size(), "Apache-2.0 (Portico's)")

    comparisons = [
        (portico("any of harassment/hate/sexual/violence", OFFENSIVE), OFFENSIVE),
        (compare_profanity_check(rows, args.runs), OFFENSIVE),
        (portico("prompt_injection", injection), injection),
        (compare_jailguard(rows, args.runs, args.jailguard_model_dir), injection),
    ]
    quality = quality_cells(rows, scores)
    compared = [comparison_cells(rows, comparison, targets) for comparison, targets in comparisons]
    if args.markdown:
        print_markdown(QUALITY_COLUMNS, quality, left=1)
        print_markdown(COMPARE_COLUMNS, compared, left=4)
    else:
        print_rich(QUALITY_COLUMNS, quality, 1, "Portico's safety head on the labelled set (threshold 0.5)")
        print_rich(COMPARE_COLUMNS, compared, 4, "Candidates on the same set")
    for comparison, _ in comparisons:
        if comparison.note:
            console.print(f"{comparison.name}: {comparison.note}", style="dim")


if __name__ == "__main__":
    main()
