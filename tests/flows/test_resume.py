"""Faults, crashes and budgets: a run must lose nothing, redo nothing it already paid for, and
end with the same data set as a run that nothing happened to."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from gecko_factory.config import FretConfig
from gecko_factory.options import RunOptions
from gecko_factory.testing.launch import ScriptedServer

KEY = "sk-test-SECRETSECRETSECRETSECRET0123456789"
ROOT = Path(__file__).resolve().parents[2]


def dataset(run_dir: Path) -> pl.DataFrame:
    files = sorted((run_dir / "shards").glob("part-*.parquet"))  # never *.parquet.tmp
    return pl.read_parquet(files).sort("example_id") if files else pl.DataFrame()


def without_similarity(df: pl.DataFrame) -> pl.DataFrame:
    kept = ("id", "retrieval_rank", "ql", "rc", "fused_score", "fused_rank")
    return df.with_columns(pl.col("candidates").list.eval(
        pl.struct(*(pl.element().struct.field(f) for f in kept))))


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, wiki_sample) -> str:
    path = tmp_path_factory.mktemp("resume") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[30:60]))
    return str(path)


ARGS = ["--candidates", "5", "--shard-size", "4"]


def _env(server: ScriptedServer, **extra: str) -> dict:
    return {**os.environ, "OPENAI_BASE_URL": server.base_url, "GECKO_LLM_MODEL": "scripted",
            "OPENAI_API_KEY": KEY, "GECKO_LLM_CONCURRENCY": "4", **extra}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, prefect_harness):
    """An uninterrupted, fault-free run, and its LLM call count."""
    from flows.fret import fret_flow

    run_dir = tmp_path_factory.mktemp("ref") / "run"
    with ScriptedServer() as server:
        os.environ.update(OPENAI_BASE_URL=server.base_url, GECKO_LLM_MODEL="scripted")
        try:
            fret_flow(run_dir=str(run_dir), options=RunOptions(corpus=corpus, candidates=5, shard_size=4))
        finally:
            os.environ.pop("OPENAI_BASE_URL"), os.environ.pop("GECKO_LLM_MODEL")
        calls = server.calls() - 1  # less the probe
    return run_dir, dataset(run_dir), calls


def test_faults_at_30_percent(tmp_path, corpus, reference, prefect_harness, monkeypatch):
    from flows.fret import fret_flow

    _, ref, _ = reference
    run_dir = tmp_path / "run"
    with ScriptedServer(fault_rate=0.3, fault_seed=7, fault_sleep_s=1.5) as server:
        for k, v in _env(server, GECKO_LLM_TIMEOUT_S="0.5", GECKO_LLM_BACKOFF_S="0.01",
                         GECKO_LLM_MAX_RETRIES="6").items():
            monkeypatch.setenv(k, v)
        m = fret_flow(run_dir=str(run_dir), options=RunOptions(corpus=corpus, candidates=5, shard_size=4))
        stats = server.stats()
    faults = {k: v for k, v in stats.items() if k.startswith("fault_")}
    # a seed is skipped when every one of its synthesis attempts got invalid JSON
    lost = sum(n >= FretConfig().synth_attempts for n in stats["bad_synthesis"])
    print(f"\nfaults injected: {faults}; invalid synthesis per passage {stats['bad_synthesis']}, lost {lost}")
    assert len(faults) == 5 and sum(faults.values()) > 30  # all five kinds, many times
    assert m["accounting_ok"] and m["shards"]["pending"] == []
    expected_skips = {"invalid_llm_output": lost} if lost else {}
    assert m["counts"]["skipped"] == expected_skips
    # every fault cost a retry (the probe's one request is outside the run's ledger)
    assert m["llm_usage"]["retries"] >= sum(faults.values()) - 1
    got = dataset(run_dir)
    # every example not skipped is exactly the one the fault-free run made, except for the last
    # bits of the query-passage cosine: a skipped seed leaves its group's query batch shorter,
    # and the encoder's padded batch moves its output by ~1e-7 (ids, ranks and scores are equal)
    want = ref.filter(pl.col("seed_id").is_in(got["seed_id"].implode()))
    assert without_similarity(got).equals(without_similarity(want))
    for a, b in zip(got["candidates"].to_list(), want["candidates"].to_list()):
        assert max(abs(x["similarity"] - y["similarity"]) for x, y in zip(a, b)) < 1e-5
    assert got.height == ref.height - lost


def _cached_keys(run_dir: Path) -> int:
    db = run_dir / "cache" / "llm.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


def _cli(run_dir: Path, corpus: str, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--corpus", corpus,
                             "--out", str(run_dir), *ARGS, *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def test_kill_9_at_random_points_then_rerun(tmp_path, corpus, reference, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    _, ref, ref_calls = reference
    rng = random.Random(1234)
    trials = []
    with ScriptedServer(latency_ms=120) as server:
        env = _env(server, PREFECT_API_URL=PREFECT_API_URL.value())
        t0 = time.monotonic()
        full = _cli(tmp_path / "timing", corpus, env)
        out, _ = full.communicate(timeout=300)
        assert full.returncode == 0, out.decode()
        full_s = time.monotonic() - t0
        # one random point in each third of the timed run: early, middle and late kills
        # cover what five unstratified points did, in three CLI pairs (CI's < 20 min aim)
        for trial, (lo, hi) in enumerate([(0.35, 0.55), (0.55, 0.75), (0.75, 0.95)]):
            run_dir = tmp_path / f"trial{trial}"
            proc = _cli(run_dir, corpus, env)
            kill_at = rng.uniform(lo, hi) * full_s
            time.sleep(kill_at)
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and everything it started
            proc.wait()
            cached_before = _cached_keys(run_dir)
            calls_before = server.calls()
            rerun = _cli(run_dir, corpus, env)
            out, _ = rerun.communicate(timeout=300)
            assert rerun.returncode == 0, out.decode()
            assert KEY.encode() not in out
            rerun_calls = server.calls() - calls_before - 1  # less the probe
            trials.append((round(kill_at, 1), cached_before, rerun_calls))
            # nothing paid for before the kill is asked again: the rerun asks exactly the rest
            assert rerun_calls == ref_calls - cached_before
            got = dataset(run_dir)
            assert got["example_id"].n_unique() == got.height
            assert got.equals(ref)
            assert not list(run_dir.rglob("*.tmp")) and manifest(run_dir)["accounting_ok"]
            for f in run_dir.rglob("*"):
                assert not f.is_file() or KEY.encode() not in f.read_bytes(), f
    print(f"\nfull run {full_s:.1f}s, {ref_calls} LLM calls; trials (kill at s, answers cached "
          f"before the kill, calls made by the rerun): {trials}")
    assert sum(t[1] for t in trials) > 0  # some kills landed after answers were paid for


def test_budget_stops_cleanly_and_resume_finishes(tmp_path, corpus, reference, prefect_harness, monkeypatch):
    from flows.cli import app

    _, ref, _ = reference
    run_dir = tmp_path / "run"
    with ScriptedServer() as server:
        for k, v in _env(server).items():
            monkeypatch.setenv(k, v)
        first = CliRunner().invoke(app, ["run", "--corpus", corpus, "--out", str(run_dir), *ARGS,
                                         "--max-tokens", "20000"])
        assert first.exit_code == 3, first.output
        assert "token budget reached" in first.output
        m = manifest(run_dir)
        assert m["stopped"] and m["shards"]["pending"] and m["accounting_ok"]
        assert m["counts"]["pending_seeds"] > 0 and not m["failed_shards"]
        status = CliRunner().invoke(app, ["status", str(run_dir)])
        assert "pending" in status.output and "failed" not in status.output.split("\n")[-2]
        second = CliRunner().invoke(app, ["resume", str(run_dir), "--max-tokens", "10000000"])
        assert second.exit_code == 0, second.output
    assert dataset(run_dir).equals(ref)
    assert manifest(run_dir)["shards"]["pending"] == []


def test_second_writer_is_refused_and_stale_lock_taken_over(tmp_path):
    from gecko_factory.lock import RunLocked, run_lock

    with run_lock(tmp_path):
        child = subprocess.run([sys.executable, "-c", "from pathlib import Path; from gecko_factory.lock import run_lock\n"
                                f"with run_lock(Path({str(tmp_path)!r})): pass"], capture_output=True, text=True)
        assert child.returncode != 0 and "is being written by pid" in child.stderr
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "x"}))
    with run_lock(tmp_path):  # the writer is gone: take over
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()
    with pytest.raises(RunLocked):
        with run_lock(tmp_path):
            with run_lock(tmp_path):
                pass


def test_changed_config_is_refused_without_force(tmp_path, corpus, reference, prefect_harness, monkeypatch):
    from flows.cli import app

    ref_dir, _, _ = reference
    with ScriptedServer() as server:
        for k, v in _env(server).items():
            monkeypatch.setenv(k, v)
        result = CliRunner().invoke(app, ["run", "--corpus", corpus, "--out", str(ref_dir),
                                          "--candidates", "6", "--shard-size", "4"])
    assert result.exit_code == 1 and "planned with another config" in result.output


def test_a_failing_shard_does_not_stop_the_others(tmp_path, corpus, reference, prefect_harness, monkeypatch):
    """A shard that fails for good (here: a bug injected into its mining step) is listed, the run
    ends Failed, the other shards are committed, and a rerun finishes the same data set."""
    import gecko_factory.shard_pipeline as shard_pipeline
    from flows.cli import app
    from flows.fret import ShardsFailed, fret_flow
    from gecko_factory.plan import RunPlan

    ref_dir, ref, _ = reference
    doomed = set(RunPlan.load(ref_dir).shards[1])
    real_mine = shard_pipeline.mine

    def mine_with_a_bug(index, vectors, seed_ids, n, ef):
        if doomed & set(seed_ids):
            raise ValueError("injected bug in shard 1")
        return real_mine(index, vectors, seed_ids, n, ef)

    run_dir = tmp_path / "run"
    with ScriptedServer() as server:
        for k, v in _env(server).items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(shard_pipeline, "mine", mine_with_a_bug)
        with pytest.raises(ShardsFailed, match=r"1 of 8 shards failed: \[1\]"):
            fret_flow(run_dir=str(run_dir), options=RunOptions(corpus=corpus, candidates=5, shard_size=4))
        status = CliRunner().invoke(app, ["status", str(run_dir)])
        assert "00001 │ failed" in status.output and "injected bug in shard 1" in status.output
        assert "7 done, 1 failed, 0 pending" in status.output
        assert manifest(run_dir)["failed_shards"].keys() == {"1"}
        monkeypatch.setattr(shard_pipeline, "mine", real_mine)
        fret_flow(run_dir=str(run_dir), options=RunOptions(corpus=corpus, candidates=5, shard_size=4))
    assert dataset(run_dir).equals(ref)
    assert not (run_dir / "shards" / "part-00001.failed.json").exists()
