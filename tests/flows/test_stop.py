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


def test_sigterm_stops_a_run_whose_shards_are_waiting_for_the_llm(tmp_path, prefect_server, wiki_sample):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:40]))
    out = tmp_path / "run"
    with ScriptedServer(latency_ms=2000) as llm:
        env = {**os.environ, "PREFECT_API_URL": prefect_server["api"],
               "PREFECT_HOME": str(prefect_server["home"]), "OPENAI_BASE_URL": llm.base_url,
               "GECKO_LLM_MODEL": "scripted", "GECKO_HOME": str(tmp_path / "gecko-home"),
               "GECKO_LLM_CONCURRENCY": "2"}
        log = (tmp_path / "log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--corpus", str(corpus),
                                 "--out", str(out), "--limit", "24", "--candidates", "3",
                                 "--shard-size", "4"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 200
            while llm.calls() < 4 and time.monotonic() < deadline:  # past the probe, into the shards
                assert proc.poll() is None, (tmp_path / "log").read_text()[-3000:]
                time.sleep(0.5)
            assert llm.calls() >= 4, (tmp_path / "log").read_text()[-3000:]
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            seconds = time.monotonic() - t0
        finally:
            proc.kill()
            log.close()
    text = (tmp_path / "log").read_text()
    assert proc.returncode != 0
    assert seconds < 10, f"{seconds:.1f} s after SIGTERM\n{text[-3000:]}"  # 4 seeds at 2 s a call: ~50 s
    assert not list(out.glob("shards/*.done.json")) and not list(out.glob("shards/*.parquet"))
    failures = [json.loads(p.read_text()) for p in out.glob("shards/*.failed.json")]
    assert failures and all(f["error"] == "ShardStopped" for f in failures), failures
