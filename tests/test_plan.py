"""Planning: a seed list restricts the seeds, and a run folder keeps the seed list it was planned with."""

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
