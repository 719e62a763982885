"""Scale-out: the same corpus gives the same data set on threads and on a 2-process Dask cluster."""

from __future__ import annotations

import json
import os

import polars as pl
import pytest
from typer.testing import CliRunner

from gecko_factory.options import RunOptions

SHARDS = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, wiki_sample) -> str:
    path = tmp_path_factory.mktemp("dask") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:24]))
    return str(path)


def _rows(run_dir) -> pl.DataFrame:
    return pl.read_parquet(sorted((run_dir / "shards").glob("part-*.parquet"))).sort("example_id")


def test_threads_and_a_two_process_cluster_give_the_same_data_set(tmp_path, corpus, scripted_server,
                                                                   prefect_harness, monkeypatch):
    from distributed import Client, LocalCluster, get_task_stream

    from flows.fret import LOCAL_CLUSTER, fret_flow

    # Before the cluster starts: its worker processes inherit this environment.
    monkeypatch.setenv("OPENAI_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("GECKO_LLM_MODEL", "scripted")
    params = dict(corpus=corpus, candidates=4, shard_size=24 // SHARDS)

    before = scripted_server.calls()
    threads = fret_flow(run_dir=str(tmp_path / "threads"), options=RunOptions(**params))
    calls_threads = scripted_server.calls() - before

    with LocalCluster(**LOCAL_CLUSTER) as cluster, Client(cluster) as client:
        worker_pids = client.run(os.getpid)  # {worker address: pid}
        before = scripted_server.calls()
        with get_task_stream(client) as stream:
            dask = fret_flow(run_dir=str(tmp_path / "dask"),
                             options=RunOptions(task_runner=cluster.scheduler_address, **params))
        calls_dask = scripted_server.calls() - before
    # every shard ran in a worker process, none in this one, and each did its own LLM work
    # (separate run folders: separate request caches)
    assert len(set(worker_pids.values())) == 2 and os.getpid() not in worker_pids.values()
    assert len(stream.data) == SHARDS and {t["worker"] for t in stream.data} <= set(worker_pids)
    assert calls_dask == calls_threads > 24
    assert dask["counts"] == threads["counts"] and dask["shards"] == threads["shards"] == {
        "total": SHARDS, "done": SHARDS, "pending": []}
    a, b = _rows(tmp_path / "threads"), _rows(tmp_path / "dask")
    assert a.height == 24 and a.equals(b)
    for shard in range(SHARDS):  # and shard by shard: the same seeds in the same files
        name = f"part-{shard:05d}.parquet"
        assert pl.read_parquet(tmp_path / "threads" / "shards" / name).equals(
            pl.read_parquet(tmp_path / "dask" / "shards" / name))


def test_cli_task_runner_options_are_checked_before_any_work(tmp_path):
    from flows.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "--out", str(out), "--task-runner", "ray"])
    assert result.exit_code == 2 and "expected threads or dask" in result.output
    result = CliRunner().invoke(app, ["run", "--out", str(out), "--dask-address", "tcp://127.0.0.1:1"])
    assert result.exit_code == 2 and "needs --task-runner dask" in result.output
    assert not out.exists()
