"""Gecko's two-prompt judge, and RC-only judging against a server without prompt log-probs."""

from __future__ import annotations

import polars as pl

from gecko_factory.options import RunOptions
from gecko_factory.testing.launch import ScriptedServer


def _rows(run_dir) -> pl.DataFrame:
    return pl.read_parquet(sorted((run_dir / "shards").glob("part-*.parquet")))


def test_default_judge_is_two_prompt_at_1_plus_2n_calls(tmp_path, small_corpus, prefect_harness, llm_env):
    from flows.fret import fret_flow

    m = fret_flow(run_dir=str(tmp_path / "run"), options=RunOptions(
        corpus=small_corpus, limit=6, candidates=4, shard_size=6))  # no judge_mode: the default
    assert m["judge_mode"] == ["two_prompt"] and m["counts"]["examples"] == 6
    assert m["llm_usage"]["calls"] == 6 * (1 + 2 * 4)
    df = _rows(tmp_path / "run")
    assert (df["judge_mode"] == "two_prompt").all()
    assert all(c["ql"] is not None and c["rc"] is not None for cands in df["candidates"] for c in cands)


def test_server_without_prompt_logprobs_runs_rc_only_and_says_so(tmp_path, small_corpus, prefect_harness,
                                                                 monkeypatch, caplog):
    from flows.fret import fret_flow

    with ScriptedServer(prompt_logprobs=False) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("GECKO_LLM_MODEL", "scripted")
        m = fret_flow(run_dir=str(tmp_path / "run"), options=RunOptions(
            corpus=small_corpus, limit=6, candidates=4, shard_size=6))
    assert m["judge_mode"] == ["rc_only"] and m["judge_mode_used"] == "rc_only"
    assert "RC-only" in caplog.text
    df = _rows(tmp_path / "run")
    assert (df["judge_mode"] == "rc_only").all()
    for row in df.iter_rows(named=True):
        assert all(c["ql"] is None for c in row["candidates"])
        best = max(row["candidates"], key=lambda c: (c["rc"], -c["retrieval_rank"]))
        assert row["positive_id"] == best["id"]


def test_rc_only_shards_are_redone_when_the_server_gives_log_probs(tmp_path, small_corpus, prefect_harness,
                                                                  monkeypatch):
    """The judge mode actually used is in the marker's hash: RC-only shards are not reused as
    two-prompt ones by a later run against a server that has prompt log-probs."""
    from flows.fret import fret_flow

    run_dir = tmp_path / "run"
    monkeypatch.setenv("GECKO_LLM_MODEL", "scripted")
    params = dict(run_dir=str(run_dir), options=RunOptions(corpus=small_corpus, limit=8, candidates=3,
                                                            shard_size=4))
    with ScriptedServer(prompt_logprobs=False) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        first = fret_flow(**params)
    assert first["judge_mode_used"] == "rc_only" and (_rows(run_dir)["judge_mode"] == "rc_only").all()
    with ScriptedServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        second = fret_flow(**params)
        calls = server.calls()
    assert second["judge_mode_used"] == "two_prompt"
    df = _rows(run_dir)
    assert df.height == 8 and (df["judge_mode"] == "two_prompt").all()
    assert all(c["ql"] is not None for cands in df["candidates"] for c in cands)
    # both shards judged again: 3 QL calls per seed (the cache had none) + probes
    assert second["llm_usage"]["calls"] >= 8 * 3
    print(f"\nrc_only run then two_prompt run: 2 of 2 shards redone, {calls} calls to the second server")


def test_a_judge_model_apart_from_the_writer(tmp_path, small_corpus, prefect_harness, llm_env, monkeypatch):
    """GECKO_LLM_JUDGE_MODEL: synthesis asks for `model`, every judge call for the judge; both are
    in the config (another judge is another data set) and in every row."""
    from flows.fret import fret_flow
    from gecko_factory.plan import RunPlan

    monkeypatch.setenv("GECKO_LLM_JUDGE_MODEL", "scripted-judge")
    before = llm_env.stats()
    m = fret_flow(run_dir=str(tmp_path / "run"),
                  options=RunOptions(corpus=small_corpus, limit=4, candidates=3, shard_size=4))
    assert m["counts"]["examples"] == 4
    asked = {k: v - before.get(k, 0) for k, v in llm_env.stats().items() if ":" in k}
    # 4 syntheses by the writer; 4 x 3 QL completions and 4 x 3 RC chats by the judge (+ the probe)
    assert asked.get("chat_synthesis:scripted") == 4 and not asked.get("chat_synthesis:scripted-judge")
    assert asked.get("chat_relevance:scripted-judge") == 12 and not asked.get("chat_relevance:scripted")
    assert asked.get("completions:scripted-judge") == 12 + 1 and not asked.get("completions:scripted")
    df = _rows(tmp_path / "run")
    assert (df["llm_model"] == "scripted").all() and (df["judge_model"] == "scripted-judge").all()
    cfg = RunPlan.load(tmp_path / "run").config
    assert (cfg.llm_model, cfg.judge_model) == ("scripted", "scripted-judge")
    assert cfg.output_hash() != cfg.model_copy(update={"judge_model": ""}).output_hash()
