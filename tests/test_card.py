"""The shard table and data-set card, from a real run folder (plan, committed shards, manifest)
whose rows are made here, so every figure can be worked out by hand."""

from __future__ import annotations

import json
import statistics

import pytest

from gecko_factory.card import dataset_card, read_rows, run_card, shard_table, without_secrets
from gecko_factory.config import FretConfig
from gecko_factory.corpus import CorpusSpec
from gecko_factory.manifest import Manifest, ShardCounts, read_manifest, write_manifest
from gecko_factory.plan import plan_run
from gecko_factory.schemas import FretRow, ShardStats
from gecko_factory.shards import commit_shard, hash_ids, record_failure, shard_config_hash, shard_file

KEY = "sk-card-0123456789abcdefghijklmnopqrstuvwxyz"


def _row(seed: str, i: int, ids: list[str]) -> FretRow:
    """Three candidates; the positive is the seed for even i, another paragraph for odd i."""
    others = [x for x in ids if x != seed][:2]
    pos, neg = (seed, others[1]) if i % 2 == 0 else (others[0], others[1])
    cands = [{"id": c, "retrieval_rank": r, "similarity": 1 - 0.1 * r, "ql": -float(r + i), "rc": -0.1 * r,
              "fused_score": 1.0 / r, "fused_rank": {pos: 1, neg: 3}.get(c, 2)}
             for r, c in enumerate([seed, *others], 1)]
    return FretRow.from_dict({"example_id": f"ex{seed}", "seed_id": seed, "task_type": ["qa", "fact | check"][i % 2],
            "task": f"task {i}", "query": f"query {i}\nsecond line", "positive_id": pos,
            "positive_title": "", "positive_text": "p " * 300, "negative_id": neg, "negative_title": "",
            "negative_text": f"negative {i}", "relabelled": pos != seed, "candidates": cands,
            "judge_mode": "one_pass", "fusion": "rrf", "llm_model": "m", "judge_model": "m", "prompt_version": "v"})


@pytest.fixture
def run_dir(tmp_path, wiki_sample):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:10]))
    run = tmp_path / "run"
    plan = plan_run(FretConfig(corpus=CorpusSpec(path=str(corpus)), shard_size=4), run)
    ids = [i for shard in plan.shards for i in shard]
    for shard in (0, 1):
        seeds = plan.shards[shard]
        rows = [_row(s, i, ids) for i, s in enumerate(seeds[:-1])]  # the last seed is skipped
        stats = ShardStats(seeds=len(seeds), skipped={"invalid_llm_output": 1},
                           relabelled=sum(r.relabelled for r in rows), seconds=1.5 + shard,
                           usage={"calls": 10 + shard, "prompt_tokens": 100, "completion_tokens": 7,
                                  "cache_hits": shard})
        commit_shard(run, shard, rows, hash_ids(seeds), shard_config_hash(plan.config_hash, "one_pass"), stats)
    record_failure(run, 2, RuntimeError("boom"))
    write_manifest(run, {"failed_shards": {"2": "RuntimeError: boom"},
                         "llm": {"model": "m", "api_key": KEY, "base_url": "http://x/v1"}})
    return run


def test_shard_table_has_every_planned_shard(run_dir):
    table, _ = run_card(run_dir)
    stats = json.loads((run_dir / "stats.json").read_text())["shards"]
    assert [r["shard"] for r in table] == ["part-00000", "part-00001", "part-00002"]
    for row, s in zip(table, stats):
        assert row["state"] == "done" and row["rows"] == s["rows"] == 3
        assert row["skipped"] == 1 and row["skip_reasons"] == "invalid_llm_output: 1"
        assert row["llm_calls"] == s["usage"]["calls"] and row["cache_hits"] == s["usage"]["cache_hits"]
        assert row["prompt_tokens"] == 100 and row["seconds"] == s["seconds"]
    assert table[2]["state"] == "failed" and table[2]["rows"] is None
    assert "boom" in table[2]["error"] and table[0]["error"] == ""


def test_card_figures_by_hand(run_dir):
    _, card = run_card(run_dir)
    m = read_manifest(run_dir)
    assert m.counts.examples == 6 and m.counts.relabelled == 2  # i = 1 in each shard
    assert "| relabel rate (positive ≠ seed) | 33.3% (2 of 6) |" in card
    assert "| hard negatives from beyond the N judged (unjudged, guard-safe) | 0 of 6 |" in card
    assert "| qa | 4 | 66.7% |" in card and "| fact \\| check | 2 | 33.3% |" in card
    sample = read_rows(sorted((run_dir / "shards").glob("part-*.parquet")))
    # the positive's QL is -(rank + i): rank 1 for the seed (i = 0, 2), rank 2 for i = 1
    assert sorted(sample.positive_ql) == sorted([-1.0, -3.0, -3.0] * 2)
    mean = statistics.fmean(sample.positive_ql)
    assert f"| positive QL | 6 | {mean:.3f} |" in card
    assert card.count("| query | query ") == 3 and "| query | query 1 second line |" in card  # one line
    assert "…" in card  # the 600-character positive is cut
    assert "| pending seeds (shards not done) | 2 |" in card
    assert KEY not in card and '"model": "m"' in card


def test_rc_only_scores_show_as_n_a(run_dir):
    sample = read_rows([shard_file(run_dir, 0)])
    sample.positive_ql = [None] * len(sample.positive_ql)
    m = read_manifest(run_dir)
    assert "| positive QL | 0 | n/a | n/a | n/a | n/a |" in dataset_card(m, sample, "x")


def test_pending_shard_and_secret_filter():
    m = Manifest.model_construct(shards=ShardCounts(total=1, done=0), failed_shards={})
    assert shard_table(m, [])[0]["state"] == "pending"
    nested = {"llm": {"api_key": KEY, "model": "m"}, "list": [{"Authorization": "Bearer x", "a": 1}]}
    assert without_secrets(nested) == {"llm": {"model": "m"}, "list": [{"a": 1}]}
