"""The whole FRet flow over real HTTP (scripted server), a real Prefect run, real Parquet/HNSW."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gecko_factory.corpus import Paragraph
from gecko_factory.fusion import FusionConfig, NegativeGuard, Scored, choose_positive, fuse, guard_reason, rank_desc
from gecko_factory.judge import judge_passage, one_pass_prompt, query_span
from gecko_factory.options import RunOptions
from gecko_factory.schemas import FRET_SCHEMA
from gecko_factory.testing import scripted_server as scripted
from gecko_factory.testing.launch import free_port

KEY = "sk-test-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210"


@pytest.fixture(scope="module")
def flow_corpus(tmp_path_factory, wiki_sample) -> str:
    """50 good paragraphs, one malformed line and one paragraph the LLM always botches."""
    path = tmp_path_factory.mktemp("flow") / "corpus.jsonl"
    lines = [json.dumps(r) for r in wiki_sample[:25]]
    lines.append('{"title": "broken", "text": "no closing quote}')
    lines.append(json.dumps({"text": "This paragraph makes the scripted LLM answer with broken "
                                     "JSON every time it is asked: [[invalid]]"}))
    lines += [json.dumps(r) for r in wiki_sample[25:50]]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, flow_corpus, scripted_server, prefect_harness):
    import os

    from flows.fret import fret_flow

    run_dir = tmp_path_factory.mktemp("run") / "fret"
    os.environ.update(OPENAI_BASE_URL=scripted_server.base_url, GECKO_LLM_MODEL="scripted",
                      OPENAI_API_KEY=KEY)
    try:
        before = scripted_server.calls()
        manifest = fret_flow(run_dir=str(run_dir), options=RunOptions(
            corpus=flow_corpus, candidates=8, shard_size=16,
            judge_mode="one_pass"))  # the scores below are checked for one-pass
        after = scripted_server.calls()
    finally:
        for k in ("OPENAI_BASE_URL", "GECKO_LLM_MODEL", "OPENAI_API_KEY"):
            os.environ.pop(k)
    calls = after - before
    return run_dir, manifest, calls


def test_counts_and_accounting(finished_run):
    run_dir, m, _ = finished_run
    assert m["corpus"]["paragraphs"] == 51 and m["corpus"]["skipped"] == {"malformed_record": 1}
    assert any(":26:" in e for e in m["corpus"]["errors"])  # the malformed line, by number
    assert m["counts"]["seeds"] == 51 and m["counts"]["examples"] == 50
    assert m["counts"]["skipped"] == {"invalid_llm_output": 1}
    assert m["accounting_ok"] and m["shards"] == {"total": 4, "done": 4, "pending": []}
    assert m["judge_mode"] == ["one_pass"]
    # 51 synthesis calls + the botched paragraph's 3 retries (synth_attempts 4), and N=8 judge
    # passes per example
    assert m["llm_usage"]["calls"] == 51 + 3 + 50 * 8


def test_schema_and_rows(finished_run):
    run_dir, _, _ = finished_run
    files = sorted((run_dir / "shards").glob("part-*.parquet"))
    assert [f.name for f in files] == [f"part-0000{i}.parquet" for i in range(4)]
    for f in files:
        assert pq.read_schema(f).equals(FRET_SCHEMA, check_metadata=False)
    df = pl.read_parquet(files)
    assert df.height == 50 and df["example_id"].n_unique() == 50
    assert (df["candidates"].list.len() == 8).all()
    for row in df.iter_rows(named=True):  # the seed is always among its own candidates
        assert row["seed_id"] in {c["id"] for c in row["candidates"]}
    assert not list(run_dir.rglob("*.tmp"))


def test_positive_and_negative_follow_the_returned_scores(finished_run):
    """Recompute every score from what the scripted server returns, then the fusion, by hand."""
    run_dir, _, _ = finished_run
    corpus = {r["id"]: r for r in pq.read_table(run_dir / "corpus.parquet").to_pylist()}
    df = pl.read_parquet(sorted((run_dir / "shards").glob("part-*.parquet")))
    for row in df.iter_rows(named=True):
        cands = row["candidates"]
        for c in cands:
            passage = judge_passage(Paragraph(**corpus[c["id"]]), 1200)
            ql_prompt, prompt = one_pass_prompt(passage, row["query"])
            tokens, lps, offsets = scripted.prompt_scores(prompt)
            q0, q1 = query_span(ql_prompt, row["query"])
            q_lp = sum(lp for t, lp, o in zip(tokens, lps, offsets) if o < q1 and o + len(t) > q0)
            assert c["ql"] == pytest.approx(q_lp) and c["rc"] == pytest.approx(lps[-1])
        scored = [Scored(c["id"], c["retrieval_rank"], c["similarity"], c["ql"], c["rc"]) for c in cands]
        fusion = FusionConfig.parse(row["fusion"])
        fused = fuse(scored, fusion)
        ranks = rank_desc(fused)
        assert [c["fused_rank"] for c in cands] == ranks
        positive = choose_positive(scored, fused, fusion, row["seed_id"])
        assert row["positive_id"] == positive.id
        # the lowest fused candidate the guard lets through (its near-duplicate test reads passage
        # vectors, which rows do not keep; no two paragraphs here are that close)
        allowed = [c for _, c in sorted(zip(ranks, scored), key=lambda rc: -rc[0])
                   if c.id != positive.id and guard_reason(c, positive, row["seed_id"], NegativeGuard(), None) is None]
        assert row["negative_id"] == allowed[0].id
        assert row["relabelled"] == (row["positive_id"] != row["seed_id"])
        assert row["positive_text"] == corpus[row["positive_id"]]["text"]


def test_rerun_reuses_every_shard_without_llm_calls(finished_run, flow_corpus, scripted_server, monkeypatch):
    from flows.fret import fret_flow

    run_dir, first, _ = finished_run
    monkeypatch.setenv("OPENAI_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("GECKO_LLM_MODEL", "scripted")
    before = scripted_server.calls()
    again = fret_flow(run_dir=str(run_dir), options=RunOptions(corpus=flow_corpus, candidates=8, shard_size=16,
                                                             judge_mode="one_pass"))
    # only the probe: one completions call; no synthesis, no judging
    assert scripted_server.calls() - before == 1
    assert again["counts"] == first["counts"]


def test_no_secret_in_any_output(finished_run):
    run_dir, _, _ = finished_run
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


def test_the_run_folder_is_a_hugging_face_data_set(finished_run, tmp_path):
    """The flow writes README.md with the manifest: `load_dataset(run_dir)` gives the rows."""
    datasets = pytest.importorskip("datasets")
    run_dir, m, _ = finished_run
    readme = (run_dir / "README.md").read_text()
    assert readme.startswith("---\n") and "license: unknown" in readme and "# FRet data set: fret" in readme
    rows = datasets.load_dataset(str(run_dir), split="train", cache_dir=str(tmp_path))
    expected = pl.read_parquet(sorted((run_dir / "shards").glob("part-*.parquet")))
    assert rows.num_rows == m["counts"]["examples"] == expected.height
    assert rows.features == datasets.Features.from_arrow_schema(FRET_SCHEMA)
    assert sorted(rows["example_id"]) == sorted(expected["example_id"])


def test_cli_inspect(finished_run):
    from flows.cli import app

    run_dir, _, _ = finished_run
    result = CliRunner().invoke(app, ["inspect", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "examples written" in result.output and "50 of 51" in result.output
    assert "query:" in result.output
    assert "queries written by" in result.output and "scripted" in result.output  # provenance


def test_cli_empty_corpus_fails_clearly(tmp_path, prefect_harness, llm_env):
    from flows.cli import app

    (tmp_path / "empty.jsonl").write_text("")
    result = CliRunner().invoke(app, ["run", "--corpus", str(tmp_path / "empty.jsonl"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "no usable paragraph" in result.output


def test_cli_unreachable_llm_names_the_url_not_the_key(tmp_path, prefect_harness, small_corpus, monkeypatch):
    from flows.cli import app

    url = f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("GECKO_LLM_MAX_RETRIES", "1")
    monkeypatch.setenv("GECKO_LLM_BACKOFF_S", "0.01")
    result = CliRunner().invoke(app, ["run", "--corpus", small_corpus, "--limit", "4",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert url in result.output and KEY not in result.output


def test_a_lost_shard_is_redone_from_the_cache_identically(finished_run, flow_corpus, scripted_server, monkeypatch):
    from flows.fret import fret_flow

    run_dir, first, _ = finished_run
    lost = run_dir / "shards" / "part-00001.parquet"
    before_rows = pl.read_parquet(lost).sort("example_id")
    lost.unlink()
    monkeypatch.setenv("OPENAI_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("GECKO_LLM_MODEL", "scripted")
    before = scripted_server.calls()
    again = fret_flow(run_dir=str(run_dir), options=RunOptions(corpus=flow_corpus, candidates=8, shard_size=16,
                                                             judge_mode="one_pass"))
    assert scripted_server.calls() - before == 1  # the probe only
    assert pl.read_parquet(lost).sort("example_id").equals(before_rows)
    shard_stats = json.loads((run_dir / "stats.json").read_text())["shards"][1]
    assert shard_stats["usage"]["calls"] == 0 and shard_stats["usage"]["cache_hits"] == 16 + 16 * 8
    assert again["counts"] == first["counts"]


def test_a_seed_whose_judged_candidates_are_all_unsafe_takes_its_negative_from_beyond_them(
        tmp_path, wiki_sample, prefect_harness, llm_env):
    """Every paragraph is here twice (the copy one word longer), and N = 2: a seed's candidates
    are itself and its near-copy, which the guard keeps out of the negatives. The nearest
    neighbour beyond them that the guard lets through becomes the negative, recorded as an
    unjudged third candidate; with no pool, every seed is lost as no_safe_negative."""
    from flows.fret import fret_flow

    rows = [dict(r) for r in wiki_sample[:12]]
    rows += [{"title": r["title"], "text": r["text"] + " Indeed."} for r in wiki_sample[:12]]
    corpus = tmp_path / "twins.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = dict(corpus=str(corpus), candidates=2, shard_size=8, limit=8, judge_mode="one_pass")
    m = fret_flow(run_dir=str(tmp_path / "pool"), options=RunOptions(**options, negative_pool=10))
    n = m["counts"]["examples"]
    assert n == m["counts"]["unjudged_negatives"] > 0 and m["accounting_ok"]
    per_shard = json.loads((tmp_path / "pool" / "stats.json").read_text())["shards"]
    assert sum(s["unjudged_negatives"] for s in per_shard) == n
    card = (tmp_path / "pool" / "README.md").read_text()
    assert f"| hard negatives from beyond the N judged (unjudged, guard-safe) | {n} of {n} |" in card
    for row in pl.read_parquet(sorted((tmp_path / "pool" / "shards").glob("*.parquet"))).iter_rows(named=True):
        judged, extra = row["candidates"][:2], row["candidates"][2]
        assert row["negative_id"] == extra["id"] and extra["id"] not in {c["id"] for c in judged}
        assert extra["ql"] is None and extra["rc"] is None and extra["fused_rank"] == 3
        assert extra["retrieval_rank"] >= 3
        assert extra["similarity"] < 0.95 * next(c["similarity"] for c in judged if c["id"] == row["positive_id"])
    lost = fret_flow(run_dir=str(tmp_path / "none"), options=RunOptions(**options, negative_pool=0))
    assert lost["counts"]["examples"] == 0
    assert lost["counts"]["skipped"].get("no_safe_negative", 0) == m["counts"]["examples"]
    # known before judging (the guard reads no judge score): the judge is not asked about them
    used, lost_used = m["llm_usage"], lost["llm_usage"]
    judge_calls = m["counts"]["examples"] * 2  # one_pass: one call per candidate, N = 2
    assert lost_used["calls"] + lost_used["cache_hits"] == used["calls"] + used["cache_hits"] - judge_calls
