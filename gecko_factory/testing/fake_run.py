"""Run folders and data-set versions made of real files, without an LLM: the plan is the
factory's own (`plan_run`), shards are committed with `commit_shard` and the manifest is written
by `write_manifest`, but the rows are written here, from the corpus, by a rule a test can redo.

Row rule, per seed s at position i of its shard: the positive is s (every third seed: the next
paragraph of the corpus, relabelled), the hard negative the paragraph after that; the task
type alternates between two, and the query names the seed so a test can find it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from gecko_factory.config import FretConfig
from gecko_factory.corpus import CorpusSpec
from gecko_factory.manifest import write_manifest
from gecko_factory.plan import RunPlan, plan_run
from gecko_factory.schemas import FretCandidate, FretRow, ShardStats
from gecko_factory.shards import commit_shard, hash_ids, shard_config_hash
from gecko_factory.versions import commit_version, plan_refresh, prepare_run_dir

TASKS = {"question answering": "Given a question, retrieve passages that answer it",
         "keyword search": "Given a keyword, retrieve passages that contain it"}
JUDGE_MODE = "two_prompt"


def write_corpus(path: Path, paragraphs: list[dict]) -> Path:
    """JSONL with `id`, `title`, `text`: what a user hands the factory."""
    path.write_text("".join(json.dumps(p) + "\n" for p in paragraphs), encoding="utf-8")
    return path


def fret_row(seed: str, i: int, corpus: dict[str, tuple[str, str]]) -> FretRow:
    ids = list(corpus)
    nxt = ids[(ids.index(seed) + 1) % len(ids)]
    after = ids[(ids.index(seed) + 2) % len(ids)]
    pos = nxt if i % 3 == 2 else seed
    task_type = list(TASKS)[i % 2]
    cands = [FretCandidate(c, rank, 0.9 - 0.1 * rank, -float(rank + i), -0.1 * rank, 1.0 / rank,
                           {pos: 1, after: 3}.get(c, 2))
             for rank, c in enumerate(dict.fromkeys([seed, nxt, after]), 1)]
    return FretRow(f"ex-{seed}", seed, task_type, TASKS[task_type], f"what does {seed} say?",
                   pos, *corpus[pos], after, *corpus[after], pos != seed, cands, JUDGE_MODE,
                   "rrf+keep_seed", "fake-writer", "fake-judge", "v-test")


def fill_run(run: Path, shards: list[int] | None = None, skip_last: bool = True) -> RunPlan:
    """Commit `shards` (default all) of a planned run, each without its last seed (a counted
    skip), and write the manifest. Returns the plan."""
    plan = RunPlan.load(run)
    table = pq.read_table(run / "corpus.parquet")
    corpus = dict(zip(table["id"].to_pylist(), zip(table["title"].to_pylist(), table["text"].to_pylist())))
    for shard in range(len(plan.shards)) if shards is None else shards:
        seeds = plan.shards[shard]
        kept = seeds[:-1] if skip_last and len(seeds) > 1 else seeds
        rows = [fret_row(s, i, corpus) for i, s in enumerate(kept)]
        stats = ShardStats(seeds=len(seeds), skipped={"invalid_llm_output": len(seeds) - len(kept)}
                           if len(kept) < len(seeds) else {}, relabelled=sum(r.relabelled for r in rows),
                           usage={"calls": 3 * len(seeds)}, judge_mode=JUDGE_MODE)
        commit_shard(run, shard, rows, hash_ids(seeds), shard_config_hash(plan.config_hash, JUDGE_MODE), stats)
    write_manifest(run, {"judge_mode_used": JUDGE_MODE})
    return plan


def make_run(run: Path, corpus: Path, shards: list[int] | None = None, **config) -> RunPlan:
    """A planned and filled run over `corpus` (FretConfig fields in `config`)."""
    plan_run(FretConfig(corpus=CorpusSpec(path=str(corpus)), **config), run)
    return fill_run(run, shards)


def make_version(root: Path, corpus: Path, **config) -> dict:
    """One refresh of the data set at `root`, as flows/refresh.py does it, with made-up rows."""
    cfg = FretConfig(corpus=CorpusSpec(path=str(corpus)), **config)
    plan = plan_refresh(root, cfg.corpus, cfg.output_hash())
    prepare_run_dir(plan)
    plan.save()
    manifest = None
    if plan.new_seed_ids:
        run_cfg = cfg.model_copy(update={"seed_ids_file": str(plan.seed_ids_file)})
        plan_run(run_cfg, plan.run_dir)
        fill_run(plan.run_dir)
        manifest = json.loads((plan.run_dir / "manifest.json").read_text())
    return commit_version(plan, str(corpus), cfg.output_hash(), manifest)
