"""A run's (or a data-set version's) FRet rows in the formats people train and evaluate with.

- `sentence-transformers`: train.parquet (and validation.parquet) with the columns `anchor`,
  `positive`, `negative`, which SentenceTransformerTrainer takes as they are (e.g. with
  MultipleNegativesRankingLoss). The texts are what our own trainer feeds the model: the query
  carries its task (`task: {task} | query: {query}`), passages read `title: {title} | text:
  {text}` (train/model.py's format_query / format_document), and the split is the trainer's
  (a hash of seed_id, train/data.py's is_validation), so both trainers see the same examples.
- `beir`: corpus.jsonl, queries.jsonl and qrels/train.tsv (one query per example, its positive
  relevant with score 1), the layout `gecko-factory eval --beir` and BEIR's tools read. The
  corpus is the run's corpus.parquet (the paragraphs the positives were mined from) plus any
  paragraph a row names that it lacks (a version's reused rows, a version without a run).
- `jsonl`: train.jsonl, one FRet row per line, every column.
Every format writes into a folder, each file atomically, and `datasets.load_dataset(out)` reads
the sentence-transformers and jsonl ones with a train split. The rows are hf_card's
`dataset_parts`: what `load_dataset(run_dir)` gives.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gecko_factory.files import atomic_file
from gecko_factory.hf_card import dataset_parts
from gecko_factory.schemas import PARAGRAPH_SCHEMA

Format = Literal["sentence-transformers", "beir", "jsonl"]
FORMATS: tuple[str, ...] = ("sentence-transformers", "beir", "jsonl")
BATCH_ROWS = 4096  # rows in memory at a time for the streamed formats


@dataclass
class ExportReport:
    format: str
    out: Path
    rows: int = 0
    files: dict[str, int] = field(default_factory=dict)  # file (relative to out) -> records


def row_batches(folder: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The data set's rows in batches, shard by shard, rows left out of a version dropped."""
    for part in dataset_parts(Path(folder)):
        for batch in pq.ParquetFile(part.path).iter_batches(BATCH_ROWS, columns=columns):
            if part.exclude:
                ids = pa.array(sorted(part.exclude), pa.string())
                batch = batch.filter(pc.invert(pc.is_in(batch.column("example_id"), value_set=ids)))
            if batch.num_rows:
                yield batch


def export(folder: Path, fmt: Format, out: Path, val_fraction: float | None = None) -> ExportReport:
    """Write the rows of the run or version at `folder` into the folder `out` as `fmt`.
    `val_fraction`: the share of seeds in validation.parquet (sentence-transformers only;
    default: the trainer's)."""
    folder, out = Path(folder), Path(out)
    if not dataset_parts(folder):
        raise FileNotFoundError(f"{folder} has no committed shards (gecko-factory status {folder})")
    out.mkdir(parents=True, exist_ok=True)
    report = ExportReport(fmt, out)
    if fmt == "sentence-transformers":
        _sentence_transformers(folder, out, report, val_fraction)
    elif fmt == "beir":
        _beir(folder, out, report)
    elif fmt == "jsonl":
        _jsonl(folder, out, report)
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return report


def _sentence_transformers(folder: Path, out: Path, report: ExportReport,
                           val_fraction: float | None) -> None:
    # The trainer's own formatting and split (train/ imports torch: only for this format).
    from gecko_factory.train.data import is_validation
    from gecko_factory.train.model import format_document, format_query
    from gecko_factory.train.train import TrainConfig

    if val_fraction is None:
        val_fraction = TrainConfig.model_fields["val_fraction"].default
    columns = ["example_id", "seed_id", "task", "query", "positive_title", "positive_text",
               "negative_title", "negative_text"]
    splits: dict[str, list[tuple]] = {"train": [], "validation": []}
    for batch in row_batches(folder, columns):
        for r in batch.to_pylist():
            split = "validation" if is_validation(r["seed_id"], val_fraction) else "train"
            splits[split].append((r["example_id"], format_query(r["task"], r["query"]),
                                  format_document(r["positive_title"], r["positive_text"]),
                                  format_document(r["negative_title"], r["negative_text"])))
    for split, rows in splits.items():
        if not rows:
            continue  # datasets fails on a Parquet file of no rows
        rows.sort()  # by example_id, as the trainer orders them: the file does not depend on shards
        _, anchor, positive, negative = zip(*rows)
        table = pa.table({"anchor": anchor, "positive": positive, "negative": negative})
        with atomic_file(out / f"{split}.parquet") as fh:
            pq.write_table(table, fh, compression="zstd")
        report.files[f"{split}.parquet"] = len(rows)
        report.rows += len(rows)


def _jsonl(folder: Path, out: Path, report: ExportReport) -> None:
    with atomic_file(out / "train.jsonl") as fh:
        for batch in row_batches(folder):
            for row in batch.to_pylist():
                fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
                report.rows += 1
    report.files["train.jsonl"] = report.rows


def _beir(folder: Path, out: Path, report: ExportReport) -> None:
    named: dict[str, tuple[str, str]] = {}  # paragraphs the rows name, id -> (title, text)
    (out / "qrels").mkdir(exist_ok=True)
    columns = ["example_id", "seed_id", "task_type", "task", "query", "positive_id",
               "positive_title", "positive_text", "negative_id", "negative_title", "negative_text"]
    with atomic_file(out / "queries.jsonl") as queries, atomic_file(out / "qrels" / "train.tsv") as qrels:
        tsv = io.TextIOWrapper(qrels, encoding="utf-8", newline="")
        writer = csv.writer(tsv, delimiter="\t", lineterminator="\n")
        writer.writerow(["query-id", "corpus-id", "score"])
        for batch in row_batches(folder, columns):
            for r in batch.to_pylist():
                queries.write((json.dumps({"_id": r["example_id"], "text": r["query"], "metadata": {
                    "task": r["task"], "task_type": r["task_type"], "seed_id": r["seed_id"]}},
                    ensure_ascii=False) + "\n").encode())
                writer.writerow([r["example_id"], r["positive_id"], 1])
                for side in ("positive", "negative"):
                    named[r[f"{side}_id"]] = (r[f"{side}_title"], r[f"{side}_text"])
                report.rows += 1
        tsv.flush()
        tsv.detach()  # the atomic file closes the handle itself
    report.files["queries.jsonl"] = report.files["qrels/train.tsv"] = report.rows
    report.files["corpus.jsonl"] = _beir_corpus(folder, out / "corpus.jsonl", named)


def _beir_corpus(folder: Path, path: Path, named: dict[str, tuple[str, str]]) -> int:
    n = 0

    def line(doc_id: str, title: str, text: str) -> bytes:
        return (json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False) + "\n").encode()

    with atomic_file(path) as fh:
        if (folder / "corpus.parquet").exists():
            for batch in pq.ParquetFile(folder / "corpus.parquet").iter_batches(
                    BATCH_ROWS, columns=PARAGRAPH_SCHEMA.names):
                for p in batch.to_pylist():
                    named.pop(p["id"], None)
                    fh.write(line(p["id"], p["title"], p["text"]))
                    n += 1
        for doc_id, (title, text) in named.items():
            fh.write(line(doc_id, title, text))
            n += 1
    return n
