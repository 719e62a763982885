"""An LLM outage fails shards, never seeds: the run ends failed and non-zero, nothing it could not
judge is committed, and `resume` after the server is back gives exactly the unbroken run's data.

The server is the scripted one, really stopped and restarted on its port (connection refused in
between), and the factory is the CLI in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from gecko_factory.testing.launch import ScriptedServer

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--candidates", "3", "--shard-size", "5"]
# Fast client retries: an outage outlives them in seconds, not in the default's ~15 s.
FAST_CLIENT = {"GECKO_LLM_MAX_RETRIES": "2", "GECKO_LLM_BACKOFF_S": "0.2", "GECKO_LLM_CONCURRENCY": "4"}


def dataset(run_dir: Path) -> pl.DataFrame:
    files = sorted((run_dir / "shards").glob("part-*.parquet"))
    return pl.read_parquet(files).sort("example_id") if files else pl.DataFrame()


def markers(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "shards").glob("part-*.done.json"))]


def cli(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def env_for(server: ScriptedServer, **extra: str) -> dict:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "OPENAI_BASE_URL": server.base_url, "GECKO_LLM_MODEL": "scripted",
            "PREFECT_API_URL": PREFECT_API_URL.value(), **FAST_CLIENT, **extra}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, wiki_sample) -> str:
    path = tmp_path_factory.mktemp("outage") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:40]))
    return str(path)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, corpus, prefect_harness) -> pl.DataFrame:
    run_dir = tmp_path_factory.mktemp("unbroken") / "run"
    with ScriptedServer(latency_ms=60) as server:
        done = cli("run", "--corpus", corpus, "--out", str(run_dir), *ARGS, env=env_for(server))
    assert done.returncode == 0, done.stdout + done.stderr
    df = dataset(run_dir)
    assert df.height == 40  # every seed: the scripted server gives no reason to skip one
    return df


def outage_after_first_commit(server: ScriptedServer, run_dir: Path, down_s: float | None) -> threading.Thread:
    """Stop the server as soon as the first shard commits; start it again `down_s` later (None:
    it stays down)."""
    def watch() -> None:
        deadline = time.monotonic() + 120
        while not list((run_dir / "shards").glob("part-*.done.json")):
            assert time.monotonic() < deadline, "no shard committed"
            time.sleep(0.02)
        server.stop()
        if down_s is not None:
            time.sleep(down_s)
            server.start()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("down_s", [None, 20.0], ids=["stays-down", "back-after-20s"])
def test_outage_fails_shards_and_resume_gives_the_unbroken_data_set(tmp_path, corpus, unbroken, down_s):
    run_dir = tmp_path / "run"
    with ScriptedServer(latency_ms=60) as server:
        # one shard retry, 1 s later: the outage outlives it (a real one rides out minutes)
        env = env_for(server, GECKO_LLM_OUTAGE_RETRY_DELAYS_S="[1]")
        watcher = outage_after_first_commit(server, run_dir, down_s)
        t0 = time.monotonic()
        broken = cli("run", "--corpus", corpus, "--out", str(run_dir), *ARGS, env=env)
        run_s = time.monotonic() - t0
        watcher.join()
        out = broken.stdout + broken.stderr
        assert broken.returncode == 1, out
        assert f"gecko-factory resume {run_dir}" in out.replace("\n", "")
        committed = markers(run_dir)
        # what was committed is whole: no seed of a committed shard was written off
        assert committed and all(m["rows"] == 5 and not m["stats"]["skipped"] for m in committed)
        assert len(committed) < 8
        status = cli("status", str(run_dir), env=env)
        assert "failed" in status.stdout and "cannot reach the LLM server" in status.stdout.replace("\n", "")

        if down_s is None:
            server.start()  # the stays-down case: the user brings it back, then resumes
        while not server_up(server):
            time.sleep(0.2)
        calls_before = server.calls()
        t1 = time.monotonic()
        resumed = cli("resume", str(run_dir), env=env)
        resume_s = time.monotonic() - t1
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        resent = server.calls() - calls_before
    got = dataset(run_dir)
    assert got.equals(unbroken)  # exactly the unbroken run's rows: nothing lost, nothing changed
    assert all(not m["stats"]["skipped"] for m in markers(run_dir))
    print(f"\noutage ({'stays down' if down_s is None else f'back after {down_s:.0f}s'}): broken run "
          f"{run_s:.1f}s, exit 1, {len(committed)} of 8 shards committed ({sum(m['rows'] for m in committed)} "
          f"rows); resume {resume_s:.1f}s, {resent} calls sent, {got.height} rows = unbroken")


def server_up(server: ScriptedServer) -> bool:
    try:
        server.stats()
        return True
    except Exception:  # noqa: BLE001 - not listening yet
        return False


def test_outage_shorter_than_the_retry_delays_is_ridden_out(tmp_path, corpus, unbroken):
    """The default behaviour: the shard waits (AwaitingRetry) and the run finishes by itself."""
    run_dir = tmp_path / "run"
    with ScriptedServer(latency_ms=60) as server:
        env = env_for(server, GECKO_LLM_OUTAGE_RETRY_DELAYS_S="[25]")
        watcher = outage_after_first_commit(server, run_dir, 15.0)
        t0 = time.monotonic()
        done = cli("run", "--corpus", corpus, "--out", str(run_dir), *ARGS, env=env)
        watcher.join()
    assert done.returncode == 0, done.stdout + done.stderr
    assert dataset(run_dir).equals(unbroken)
    print(f"\noutage of 15 s ridden out by a 25 s shard retry: run {time.monotonic() - t0:.1f}s, exit 0")
