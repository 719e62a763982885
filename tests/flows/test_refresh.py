"""Incremental refresh over a changing corpus: only new or changed paragraphs reach the LLM."""

from __future__ import annotations

import json

import polars as pl
import pytest

from gecko_factory.options import RunOptions
from gecko_factory.train.data import load_triples
from gecko_factory.versions import list_versions, read_version, version_shards

N = 4  # candidates per query: a one-pass judge makes 1 synthesis + N judge calls per seed
PROBE = 1  # a run that reaches the LLM first asks once whether it gives prompt log-probs


def write_corpus(path, rows: dict[str, dict]) -> str:
    path.write_text("".join(json.dumps({"id": k, **v}) + "\n" for k, v in rows.items()))
    return str(path)


def refresh(root, corpus, server) -> tuple[dict, dict]:
    from flows.refresh import refresh_flow

    before = server.stats()
    result = refresh_flow(root=str(root), options=RunOptions(corpus=corpus, candidates=N, shard_size=8,
                                                              judge_mode="one_pass"))
    after = server.stats()
    return result, {k: after.get(k, 0) - before.get(k, 0) for k in ("chat", "completions")}


def live_examples(version_dir) -> pl.DataFrame:
    frames = [pl.read_parquet(p).filter(~pl.col("example_id").is_in(sorted(ex)))
              for p, ex in version_shards(version_dir)]
    return pl.concat(frames)


@pytest.fixture(scope="module")
def paragraphs(wiki_sample) -> dict[str, dict]:
    return {f"p{i:03d}": {"title": r["title"], "text": r["text"]} for i, r in enumerate(wiki_sample[:45])}


def test_refresh_processes_only_new_and_changed(tmp_path, paragraphs, llm_env, prefect_harness):
    root, path = tmp_path / "dataset", tmp_path / "corpus.jsonl"
    ids = sorted(paragraphs)

    # v1: 30 paragraphs, all new.
    corpus = write_corpus(path, {k: paragraphs[k] for k in ids[:30]})
    v1, calls = refresh(root, corpus, llm_env)
    assert v1["version"] == "v0001" and v1["new_seeds"] == 30
    assert calls == {"chat": 30, "completions": 30 * N + PROBE}

    # v2: ten paragraphs added -> LLM calls for those ten only; v1's shards reused, not copied.
    corpus = write_corpus(path, {k: paragraphs[k] for k in ids[:40]})
    v2, calls = refresh(root, corpus, llm_env)
    assert calls == {"chat": 10, "completions": 10 * N + PROBE}
    assert (v2["version"], v2["new_seeds"], v2["reused_examples"]) == ("v0002", 10, v1["examples"])
    record = read_version(root / "versions" / "v0002")
    assert all(s["path"].startswith("versions/v0001/") for s in record["shards"][: len(read_version(root / "versions" / "v0001")["shards"])])
    assert not list((root / "versions" / "v0002" / "shards").glob("*v0001*"))

    # Nothing changed: no LLM call, no version.
    v3, calls = refresh(root, corpus, llm_env)
    assert calls == {"chat": 0, "completions": 0} and v3["new_version"] is False
    assert [v["version"] for v in list_versions(root)] == ["v0001", "v0002"]

    # v3: two deleted, one edited. The edited seed is asked again, and so is every seed whose
    # positive or negative was one of those three paragraphs; every other example is kept.
    deleted, edited = {ids[3], ids[35]}, ids[7]
    rows = {k: paragraphs[k] for k in ids[:40] if k not in deleted}
    rows[edited] = {**rows[edited], "text": "Revised entry. " + rows[edited]["text"]}
    old = live_examples(root / "versions" / "v0002")
    gone = deleted | {edited}
    hit = old.filter(pl.col("positive_id").is_in(sorted(gone)) | pl.col("negative_id").is_in(sorted(gone)))
    redo = (set(hit["seed_id"]) - deleted) | {edited}
    corpus = write_corpus(path, rows)
    v4, calls = refresh(root, corpus, llm_env)
    assert calls == {"chat": len(redo), "completions": len(redo) * N + PROBE}
    assert v4["new_seeds"] == len(redo)
    live = live_examples(root / "versions" / "v0003")
    assert live.height == v4["examples"]
    assert not set(live["seed_id"]) & deleted
    assert not set(live["positive_id"]) & deleted and not set(live["negative_id"]) & deleted
    assert live.filter(pl.col("seed_id") == edited)["query"].to_list() != old.filter(pl.col("seed_id") == edited)["query"].to_list()
    assert live["example_id"].is_unique().all()
    # every live seed has exactly its one example (or a counted skip): no duplicates across versions
    assert live["seed_id"].is_unique().all()

    # Training reads a version as it is: reused shards minus their excluded rows, plus its own.
    triples = load_triples([root / "versions" / "v0003"], split="train", val_fraction=0.0)
    assert len(triples) == v4["examples"]

    # The CLI lists the three versions with their counts.
    from typer.testing import CliRunner

    from flows.cli import app

    out = CliRunner().invoke(app, ["versions", str(root)])
    assert out.exit_code == 0, out.output
    assert all(v in out.output for v in ("v0001", "v0002", "v0003"))
    assert f"{v4['examples']:,}" in out.output
