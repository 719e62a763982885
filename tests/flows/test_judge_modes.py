"""Gecko's two-prompt judge, and RC-only judging against a server without prompt log-probs."""

from __future__ import annotations

import polars as pl

from gecko_factory.testing.launch import ScriptedServer


def _rows(run_dir) -> pl.DataFrame:
    return pl.read_parquet(sorted((run_dir / "shards").glob("part-*.parquet")))


def test_default_judge_is_two_prompt_at_1_plus_2n_calls(tmp_path, small_corpus, prefect_harness, llm_env):
    from flows.fret import fret_flow

    m = fret_flow(run_dir=str(tmp_path / "run"), corpus=small_corpus, limit=6, candidates=4,
                  shard_size=6)  # no judge_mode: the default
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
        m = fret_flow(run_dir=str(tmp_path / "run"), corpus=small_corpus, limit=6, candidates=4,
                      shard_size=6)
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
    params = dict(run_dir=str(run_dir), corpus=small_corpus, limit=8, candidates=3, shard_size=4)
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
