"""Planning: a seed list restricts the seeds, a run folder keeps what it was planned with, and the
corpus streamed out at plan time is exactly what `load_corpus` reads."""

from __future__ import annotations

import json

import pytest

from gecko_factory.config import FretConfig
from gecko_factory.corpus import CorpusSpec
from gecko_factory.plan import PlanMismatch, plan_run


def test_seed_ids_file_restricts_and_is_kept(tmp_path, wiki_sample):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", **r}) + "\n" for i, r in enumerate(wiki_sample[:20])))
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("p3\np7\n\np11\n")
    cfg = FretConfig(corpus=CorpusSpec(path=str(corpus)), shard_size=2, seed_ids_file=str(seeds))
    plan = plan_run(cfg, tmp_path / "run")
    assert sorted(s for shard in plan.shards for s in shard) == ["p11", "p3", "p7"]
    assert plan.corpus_count == 20  # the index still covers the whole corpus
    with pytest.raises(PlanMismatch, match="seeds from"):
        plan_run(cfg.model_copy(update={"seed_ids_file": None}), tmp_path / "run")
    seeds.write_text("p3\nnot-there\n")
    with pytest.raises(ValueError, match="1 ids are not in the corpus"):
        plan_run(cfg, tmp_path / "other")


def test_streamed_corpus_is_what_load_corpus_reads(tmp_path, wiki_sample, monkeypatch):
    """Planning streams the corpus out in batches; the file, counts and hash must not change."""
    import pyarrow.parquet as pq

    from gecko_factory import plan as plan_mod
    from gecko_factory.corpus import load_corpus

    monkeypatch.setattr(plan_mod, "WRITE_BATCH", 7)  # several batches and a partial last one
    corpus = tmp_path / "c.jsonl"
    rows = wiki_sample[:40] + [{"text": "short"}, wiki_sample[3]]  # a skip and a duplicate
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = CorpusSpec(path=str(corpus))
    plan = plan_run(FretConfig(corpus=spec, shard_size=8), tmp_path / "run")
    expected = load_corpus(spec)
    assert pq.read_table(tmp_path / "run" / "corpus.parquet").equals(expected.to_table())
    assert plan.corpus_hash == plan_mod.corpus_hash(expected.paragraphs)
    assert (plan.corpus_count, plan.corpus_skipped) == (40, {"too_short": 1, "duplicate_text": 1})


def test_refused_plan_leaves_the_run_folder_as_it_was(tmp_path, wiki_sample):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:10]))
    cfg = FretConfig(corpus=CorpusSpec(path=str(corpus)), shard_size=4)
    run = tmp_path / "run"
    plan_run(cfg, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[10:20]))
    with pytest.raises(PlanMismatch, match="another corpus"):
        plan_run(cfg, run)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # no .tmp left either
