"""A run stopped with SIGTERM (a `kill`, a cancelled job) ends at once, with nothing half-written.

The CLI as a program against the scripted LLM server at 2 s a call, so its shards are mid-way
when the signal comes. Before the fix the shard threads ran their seeds to the end first (51 s
here) and the process outlived the `kill` by that much. Six shards for four threads: the two
queued ones must not start when the stopped ones free their threads (they did, 2026-12-03).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gecko_factory.testing.launch import ScriptedServer

pytestmark = pytest.mark.timeout(300)


def _start_then_signal(tmp_path, wiki_sample, env: dict, signal_group: int | None = None):
    """The CLI run against the scripted server at 2 s a call; once its shards are into their
    seeds, SIGTERM to the program (or `signal_group` to its whole process group, as a terminal's
    Ctrl-C sends it). Returns (seconds until the program ended, its return code, its log)."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:40]))
    out = tmp_path / "run"
    with ScriptedServer(latency_ms=2000) as llm:
        env = {**os.environ, "OPENAI_BASE_URL": llm.base_url, "GECKO_LLM_MODEL": "scripted",
               "GECKO_HOME": str(tmp_path / "gecko-home"), "GECKO_LLM_CONCURRENCY": "2", **env}
        env = {k: v for k, v in env.items() if v is not None}
        log = (tmp_path / "log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--corpus", str(corpus),
                                 "--out", str(out), "--limit", "24", "--candidates", "3",
                                 "--shard-size", "4"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 200
            while llm.calls() < 4 and time.monotonic() < deadline:  # past the probe, into the shards
                assert proc.poll() is None, (tmp_path / "log").read_text()[-3000:]
                time.sleep(0.5)
            assert llm.calls() >= 4, (tmp_path / "log").read_text()[-3000:]
            t0 = time.monotonic()
            if signal_group is None:
                proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal_group)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass  # reported below with the log
            seconds = time.monotonic() - t0
        finally:
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
            proc.wait()
            log.close()
    return seconds, proc.returncode, (tmp_path / "log").read_text()


def test_sigterm_stops_a_run_whose_shards_are_waiting_for_the_llm(tmp_path, prefect_server, wiki_sample):
    seconds, code, text = _start_then_signal(tmp_path, wiki_sample, {
        "PREFECT_API_URL": prefect_server["api"], "PREFECT_HOME": str(prefect_server["home"])})
    out = tmp_path / "run"
    assert code != 0
    assert seconds < 10, f"{seconds:.1f} s after SIGTERM\n{text[-3000:]}"  # 4 seeds at 2 s a call: ~50 s
    assert not list(out.glob("shards/*.done.json")) and not list(out.glob("shards/*.parquet"))
    failures = [json.loads(p.read_text()) for p in out.glob("shards/*.failed.json")]
    assert failures and all(f["error"] == "ShardStopped" for f in failures), failures


def test_ctrl_c_in_a_terminal_ends_a_run_on_the_ephemeral_server(tmp_path, wiki_sample):
    """Ctrl-C goes to the whole process group. Prefect's ephemeral API server was in it, died
    with the program's first breath of the stop, and the program then retried calls to it for
    222 s before it exited (2026-12-03): the server now runs in its own session
    (flows/cli_common.ephemeral_server_in_own_session) and is stopped by the program at exit."""
    seconds, code, text = _start_then_signal(
        tmp_path, wiki_sample, {"PREFECT_API_URL": None, "PREFECT_HOME": str(tmp_path / "prefect")},
        signal_group=signal.SIGINT)
    assert seconds < 20, f"{seconds:.1f} s after Ctrl-C\n{text[-3000:]}"
    assert code == 130, text[-3000:]  # the shell's code for "ended by Ctrl-C"
    assert "Stopping temporary server" in text  # stopped by the program, not by the signal
    failures = [json.loads(p.read_text()) for p in (tmp_path / "run").glob("shards/*.failed.json")]
    assert failures and all(f["error"] == "ShardStopped" for f in failures), failures
