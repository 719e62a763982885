"""FRet run folders -> (query, positive, negative) text triples -> shuffled batches.

Shards are scanned lazily with polars (only the text columns are read, never `candidates`), and
the train/validation split is a hash of `seed_id`, so every query generated from one paragraph
lands on the same side, whatever the shard layout or the number of runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from gecko_factory.hashing import stable_fraction
from gecko_factory.train.model import format_document, format_query
from gecko_factory.versions import VERSION_FILE, version_shards

Pairing = Literal["llm", "seed_random"]
Split = Literal["train", "validation"]

_LLM_COLUMNS = [
    "example_id", "seed_id", "task", "query",
    "positive_title", "positive_text", "negative_title", "negative_text",
]


@dataclass
class Triples:
    """Model-ready strings, already in Gecko's input format; row i is one example."""

    queries: list[str]
    positives: list[str]
    negatives: list[str]

    def __len__(self) -> int:
        return len(self.queries)

    def take(self, index: Sequence[int]) -> "Triples":
        return Triples(
            [self.queries[i] for i in index],
            [self.positives[i] for i in index],
            [self.negatives[i] for i in index],
        )


def shard_files(run_dir: str | Path) -> list[Path]:
    """Finished shards only: a writer's `*.tmp` file is not data yet. A data-set version
    (`version.json`) is made of the shards it lists, its own and earlier versions'."""
    if Path(run_dir, VERSION_FILE).exists():
        return [path for path, _ in version_shards(Path(run_dir))]
    files = sorted(Path(run_dir, "shards").glob("part-*.parquet"))
    return [f for f in files if ".tmp" not in f.name]


def is_validation(seed_id: str, val_fraction: float) -> bool:
    """Deterministic across processes and machines (unlike Python's salted `hash`)."""
    return stable_fraction(seed_id) < val_fraction


def scan_run(run_dir: str | Path) -> pl.LazyFrame:
    if Path(run_dir, VERSION_FILE).exists():
        # A version: each listed shard minus its excluded examples (their seed, positive or
        # negative left the corpus). Per shard, since a redone seed keeps its example id.
        parts = [pl.scan_parquet(str(path)).select(_LLM_COLUMNS)
                 .filter(~pl.col("example_id").is_in(sorted(excluded)))
                 for path, excluded in version_shards(Path(run_dir))]
        if parts:
            return pl.concat(parts)
    files = shard_files(run_dir)
    if not files:
        raise FileNotFoundError(f"no finished shards in {Path(run_dir, 'shards')}")
    return pl.scan_parquet([str(f) for f in files]).select(_LLM_COLUMNS)


def load_triples(
    run_dirs: Sequence[str | Path],
    split: Split = "train",
    val_fraction: float = 0.02,
    pairing: Pairing = "llm",
    seed: int = 0,
) -> Triples:
    """All examples of `split` from every run, in a fixed order (run, then example_id)."""
    out = Triples([], [], [])
    for run_index, run_dir in enumerate(run_dirs):
        frame = scan_run(run_dir).sort("example_id").collect()
        keep = [is_validation(s, val_fraction) == (split == "validation")
                for s in frame["seed_id"].to_list()]
        frame = frame.filter(pl.Series(keep, dtype=pl.Boolean))
        out.queries += [format_query(t, q) for t, q in zip(frame["task"], frame["query"])]
        if pairing == "llm":
            out.positives += _documents(frame["positive_title"], frame["positive_text"])
            out.negatives += _documents(frame["negative_title"], frame["negative_text"])
        elif pairing == "seed_random":
            pos, neg = _seed_random_pairs(Path(run_dir), frame["seed_id"].to_list(),
                                          seed, run_index)
            out.positives += pos
            out.negatives += neg
        else:
            raise ValueError(f"unknown pairing {pairing!r}; expected 'llm' or 'seed_random'")
    return out


def _documents(titles: pl.Series, texts: pl.Series) -> list[str]:
    return [format_document(t, x) for t, x in zip(titles, texts)]


def _seed_random_pairs(
    run_dir: Path, seed_ids: list[str], seed: int, run_index: int
) -> tuple[list[str], list[str]]:
    """Gecko's ablation: the seed paragraph as positive, a random other paragraph as negative."""
    corpus = pl.read_parquet(run_dir / "corpus.parquet", columns=["id", "title", "text"])
    ids = corpus["id"].to_list()
    docs = _documents(corpus["title"], corpus["text"])
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    if len(ids) < 2:
        raise ValueError(f"{run_dir}/corpus.parquet needs two paragraphs for random negatives")
    rng = np.random.default_rng([seed, run_index])  # one stream per run: runs don't interact
    positives, negatives = [], []
    for seed_id in seed_ids:
        if seed_id not in position:
            raise KeyError(f"seed_id {seed_id!r} is not in {run_dir}/corpus.parquet")
        i = position[seed_id]
        j = int(rng.integers(len(ids) - 1))
        j += j >= i  # uniform over the other paragraphs
        positives.append(docs[i])
        negatives.append(docs[j])
    return positives, negatives


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    # The last partial batch is dropped: a smaller batch means an easier softmax and a
    # different loss scale, which would show as noise in the curve.
    return n_examples // batch_size


def iter_batches(
    triples: Triples, batch_size: int, seed: int, epoch: int, start_batch: int = 0
) -> Iterator[Triples]:
    """Batches of one epoch; the order is a function of (seed, epoch) alone, so a resumed run
    skips `start_batch` batches and sees exactly what an unbroken run would have seen."""
    order = np.random.default_rng([seed, epoch]).permutation(len(triples))
    for b in range(start_batch, steps_per_epoch(len(triples), batch_size)):
        yield triples.take(order[b * batch_size:(b + 1) * batch_size].tolist())
