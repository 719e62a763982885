"""Planning a run: read the corpus once, fix the seed sample and the shard slices for good.

Entry point: `plan_run(config, run_dir, force) -> RunPlan`. Like datatrove's task slices, the plan
is fixed for the life of a run folder; rerunning with a different config or corpus is refused
(`PlanMismatch`) unless forced, because the old shards would silently mix two data sets.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pyarrow.parquet as pq

from gecko_factory.config import FretConfig
from gecko_factory.corpus import Paragraph, load_corpus
from gecko_factory.shards import atomic_write_json


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
    h = hashlib.sha256()
    for p in paragraphs:
        h.update(f"{p.id}\x1f{p.title}\x1f{p.text}\x1e".encode())
    return h.hexdigest()


def plan_run(config: FretConfig, run_dir: Path, force: bool = False) -> RunPlan:
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(config.corpus)
    chash = corpus_hash(corpus.paragraphs)
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
    ids = [p.id for p in corpus.paragraphs]
    if config.seed_ids_file:
        ids = restrict_to(ids, Path(config.seed_ids_file))
    random.Random(config.seed).shuffle(ids)
    seeds = ids[: config.limit] if config.limit else ids
    shards = [seeds[i : i + config.shard_size] for i in range(0, len(seeds), config.shard_size)]
    plan = RunPlan(config, config_hash, chash, len(corpus.paragraphs), dict(corpus.skipped),
                   corpus.errors, shards)

    corpus_path = run_dir / "corpus.parquet"
    tmp = corpus_path.with_name("corpus.parquet.tmp")
    pq.write_table(corpus.to_table(), tmp, compression="zstd")
    tmp.replace(corpus_path)
    plan.save(run_dir)
    return plan


def restrict_to(ids: list[str], seed_ids_file: Path) -> list[str]:
    """The corpus ids listed in `seed_ids_file`, in corpus order; an id not in the corpus is an error."""
    wanted = {line.strip() for line in seed_ids_file.read_text().splitlines() if line.strip()}
    missing = wanted.difference(ids)
    if missing:
        raise ValueError(f"{seed_ids_file}: {len(missing)} ids are not in the corpus, e.g. "
                         f"{sorted(missing)[:3]}")
    return [i for i in ids if i in wanted]


@lru_cache(maxsize=2)
def _paragraphs(path: str, mtime_ns: int) -> dict[str, Paragraph]:
    table = pq.read_table(path)
    return {i: Paragraph(i, t, x) for i, t, x in zip(*(table.column(c).to_pylist() for c in ("id", "title", "text")))}


def paragraphs_by_id(run_dir: Path) -> dict[str, Paragraph]:
    """The run's corpus by id, read once per process (keyed by mtime, so a re-plan is seen)."""
    path = run_dir / "corpus.parquet"
    return _paragraphs(str(path), path.stat().st_mtime_ns)
