"""The FRet run's Prefect artifacts, read back from the API and checked against stats.json."""

from __future__ import annotations

import json

import pytest

from gecko_factory.options import RunOptions
from tasks.artifacts import CARD_KEY, PROGRESS_KEY, SHARDS_KEY

KEY = "sk-artifacts-0123456789ABCDEFGHIJKLMNOPQRSTUV"


@pytest.fixture(scope="module")
def artifact_run(tmp_path_factory, wiki_sample, scripted_server, prefect_harness):
    import os

    from flows.fret import fret_flow

    corpus = tmp_path_factory.mktemp("art") / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:20]))
    run_dir = tmp_path_factory.mktemp("art-run") / "fret"
    os.environ.update(OPENAI_BASE_URL=scripted_server.base_url, GECKO_LLM_MODEL="scripted",
                      OPENAI_API_KEY=KEY)
    try:
        state = fret_flow(run_dir=str(run_dir), options=RunOptions(corpus=str(corpus), candidates=4,
                                                                   shard_size=8), return_state=True)
    finally:
        for k in ("OPENAI_BASE_URL", "GECKO_LLM_MODEL", "OPENAI_API_KEY"):
            os.environ.pop(k)
    assert state.is_completed(), state
    return run_dir, state.state_details.flow_run_id


def artifacts_of(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def test_shard_table_matches_stats_json(artifact_run):
    run_dir, flow_run_id = artifact_run
    artifacts = artifacts_of(flow_run_id)
    assert {PROGRESS_KEY, SHARDS_KEY, CARD_KEY} <= set(artifacts)
    table = artifacts[SHARDS_KEY]
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    stats = json.loads((run_dir / "stats.json").read_text())["shards"]
    assert len(rows) == len(stats) == 3
    for row, s in zip(rows, stats):
        assert row["shard"] == s["file"].removesuffix(".parquet") and row["state"] == "done"
        assert row["rows"] == s["rows"] and row["skipped"] == sum(s["skipped"].values())
        assert row["llm_calls"] == s["usage"]["calls"] > 0
        assert row["prompt_tokens"] == s["usage"]["prompt_tokens"] > 0
        assert row["cache_hits"] == s["usage"]["cache_hits"] and row["seconds"] == s["seconds"]
    assert sum(r["rows"] for r in rows) == 20


def test_card_and_progress(artifact_run):
    run_dir, flow_run_id = artifact_run
    artifacts = artifacts_of(flow_run_id)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    card = artifacts[CARD_KEY].data
    assert artifacts[CARD_KEY].type == "markdown"
    rate = manifest["counts"]["relabel_rate"]
    assert f"| relabel rate (positive ≠ seed) | {rate:.1%} (" in card
    assert f"| examples | 20 of 20 seeds |" in card and "## Task types" in card
    assert KEY not in card and "scripted" in card  # the model name, never the key
    # the plots are inline (the UI has no files beside the card) and are the run folder's files
    assert card.count("](data:image/png;base64,") == 2 and "](plots/" not in card
    assert sorted(p.name for p in (run_dir / "plots").iterdir()) == ["scores.png", "shards.png"]
    progress = artifacts[PROGRESS_KEY]
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert "3 of 3 shards done" in progress.description
    # seed level, with this run's LLM figures (the scripted server is unpriced: no cost)
    assert "20 of 20 seeds (100%)" in progress.description and "calls/s" in progress.description
    assert "$" not in progress.description


def test_bad_task_runner_fails_before_any_work(tmp_path, prefect_harness):
    from prefect.exceptions import ParameterTypeError

    from flows.fret import fret_flow

    with pytest.raises(ValueError, match="expected threads, dask"):
        fret_flow(run_dir=str(tmp_path / "run"), options=RunOptions(task_runner="ray"))
    # as a deployment passes it: Prefect validates the dict against the model before the run
    with pytest.raises(ParameterTypeError, match="expected threads, dask"):
        fret_flow(run_dir=str(tmp_path / "run"), options={"task_runner": "ray"})
    assert not (tmp_path / "run").exists()


def test_a_failed_run_still_publishes_with_the_failed_shard(artifact_run, scripted_server, monkeypatch, tmp_path):
    """A bug injected into one shard's mining step (as in test_resume): the run ends Failed and
    its artifacts say which shard failed and why, and how far the progress got."""
    import gecko_factory.shard_pipeline as shard_pipeline
    from flows.fret import fret_flow
    from gecko_factory.plan import RunPlan

    run_dir, _ = artifact_run
    doomed = set(RunPlan.load(run_dir).shards[1])  # same corpus, seed and shard size: same plan
    real_mine = shard_pipeline.mine

    def mine_with_a_bug(index, vectors, seed_ids, n, ef):
        if doomed & set(seed_ids):
            raise ValueError("injected bug in shard 1")
        return real_mine(index, vectors, seed_ids, n, ef)

    monkeypatch.setattr(shard_pipeline, "mine", mine_with_a_bug)
    monkeypatch.setenv("OPENAI_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("GECKO_LLM_MODEL", "scripted")
    plan = json.loads((run_dir / "plan.json").read_text())
    state = fret_flow(run_dir=str(tmp_path / "failing"), options=RunOptions(
        corpus=plan["config"]["corpus"]["path"], candidates=4, shard_size=8), return_state=True)
    assert state.is_failed()
    artifacts = artifacts_of(state.state_details.flow_run_id)
    progress = artifacts[PROGRESS_KEY]
    # seed level: the failed shard's seeds are not done (it committed nothing)
    shards = RunPlan.load(run_dir).shards
    done_seeds = len(shards[0]) + len(shards[2])
    assert float(progress.data) == pytest.approx(100 * done_seeds / 20)
    assert "2 of 3 shards done, 1 failed or stopped" in progress.description
    assert f"{done_seeds} of 20 seeds" in progress.description
    rows = artifacts[SHARDS_KEY].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert [r["state"] for r in rows] == ["done", "failed", "done"]
    assert "injected bug in shard 1" in rows[1]["error"]
    assert "| shards | 2 of 3 done |" in artifacts[CARD_KEY].data
