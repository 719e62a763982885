"""Planning a run: read the corpus once, fix the seed sample and the shard slices for good.

Entry point: `plan_run(config, run_dir, force) -> RunPlan`. Like datatrove's task slices, the plan
is fixed for the life of a run folder; rerunning with a different config or corpus is refused
(`PlanMismatch`) unless forced, because the old shards would silently mix two data sets.
The corpus is streamed to corpus.parquet a batch at a time (plus its lookup copy for shards,
corpus_store.py): planning holds the ids and dedupe digests, not the paragraphs.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pyarrow.parquet as pq

from gecko_factory.config import FretConfig
from gecko_factory.corpus import CorpusResult, CorpusSpec, Paragraph, stream_corpus
from gecko_factory.corpus_store import PARQUET_NAME, write_arrow_copy
from gecko_factory.schemas import PARAGRAPH_SCHEMA
from gecko_factory.files import atomic_file, atomic_write_json
from gecko_factory.hashing import RecordsHash

# Paragraphs per Parquet row group while streaming the corpus out (~6 MB of text).
WRITE_BATCH = 8192


class PlanMismatch(RuntimeError):
    """The run folder was planned for another config or corpus."""


@dataclass
class RunPlan:
    config: FretConfig
    config_hash: str
    corpus_hash: str
    corpus_count: int
    corpus_skipped: dict[str, int]
    corpus_errors: list[str]
    shards: list[list[str]] = field(default_factory=list)  # seed ids per shard

    def save(self, run_dir: Path) -> None:
        atomic_write_json(run_dir / "plan.json", {
            "config": self.config.model_dump(mode="json"), "config_hash": self.config_hash,
            "corpus_hash": self.corpus_hash, "corpus_count": self.corpus_count,
            "corpus_skipped": self.corpus_skipped, "corpus_errors": self.corpus_errors,
            "shards": self.shards,
        })

    @classmethod
    def load(cls, run_dir: Path) -> "RunPlan":
        raw = json.loads((run_dir / "plan.json").read_text())
        raw["config"] = FretConfig.model_validate(raw["config"])
        return cls(**raw)

    @property
    def seed_count(self) -> int:
        return sum(len(s) for s in self.shards)


def corpus_hash(paragraphs: list[Paragraph]) -> str:
    h = RecordsHash()
    for p in paragraphs:
        h.update(p.id, p.title, p.text)
    return h.hexdigest()


def _write_corpus(spec: CorpusSpec, fh: BinaryIO) -> tuple[CorpusResult, list[str], str]:
    """Stream the corpus as Parquet into `fh`; its skips, ids and hash."""
    result = CorpusResult(paragraphs=[])  # only its skips and errors: the paragraphs go to disk
    h, ids, batch = RecordsHash(), [], []
    with pq.ParquetWriter(fh, PARAGRAPH_SCHEMA, compression="zstd") as writer:
        for p in stream_corpus(spec, result):
            h.update(p.id, p.title, p.text)  # the same hash as corpus_hash over the whole list
            ids.append(p.id)
            batch.append(p)
            if len(batch) == WRITE_BATCH:
                writer.write_table(CorpusResult(batch).to_table())
                batch = []
        if batch:
            writer.write_table(CorpusResult(batch).to_table())
    return result, ids, h.hexdigest()


def plan_run(config: FretConfig, run_dir: Path, force: bool = False) -> RunPlan:
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus_path = run_dir / PARQUET_NAME
    # The new corpus replaces the old only if the plan is accepted: a refused plan raises inside.
    with atomic_file(corpus_path, f".tmp-{os.getpid()}") as fh:
        plan = _plan(config, run_dir, force, fh)
    write_arrow_copy(corpus_path)  # here, once, rather than racing in every shard process
    plan.save(run_dir)
    return plan


def _plan(config: FretConfig, run_dir: Path, force: bool, fh: BinaryIO) -> RunPlan:
    result, ids, chash = _write_corpus(config.corpus, fh)
    count = len(ids)
    config_hash = config.output_hash()
    if (run_dir / "plan.json").exists() and not force:
        old = RunPlan.load(run_dir)
        if old.corpus_hash != chash:
            raise PlanMismatch(f"{run_dir} was planned for another corpus (hash {old.corpus_hash[:12]}, "
                               f"now {chash[:12]}): use a new --out folder or --force")
        if old.config.seed_ids_file != config.seed_ids_file:
            raise PlanMismatch(f"{run_dir} was planned with seeds from {old.config.seed_ids_file}, "
                               f"now {config.seed_ids_file}: use the same seed list, a new --out "
                               f"folder, or --force")
        if old.config_hash != config_hash:
            raise PlanMismatch(f"{run_dir} was planned with another config: use a new --out folder "
                               f"or --force (compare {run_dir / 'plan.json'})")

    # A seeded shuffle, so a --limit sample spreads over the corpus instead of its first letters.
    if config.seed_ids_file:
        ids = restrict_to(ids, Path(config.seed_ids_file))
    random.Random(config.seed).shuffle(ids)
    seeds = ids[: config.limit] if config.limit else ids
    shards = [seeds[i : i + config.shard_size] for i in range(0, len(seeds), config.shard_size)]
    return RunPlan(config, config_hash, chash, count, dict(result.skipped), result.errors,
                   shards)


def restrict_to(ids: list[str], seed_ids_file: Path) -> list[str]:
    """The corpus ids listed in `seed_ids_file`, in corpus order; an id not in the corpus is an error."""
    wanted = {line.strip() for line in seed_ids_file.read_text().splitlines() if line.strip()}
    missing = wanted.difference(ids)
    if missing:
        raise ValueError(f"{seed_ids_file}: {len(missing)} ids are not in the corpus, e.g. "
                         f"{sorted(missing)[:3]}")
    return [i for i in ids if i in wanted]
