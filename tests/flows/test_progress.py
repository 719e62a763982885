"""`gecko-factory run` shows its progress in a terminal, and keeps quiet in a pipe.

The CLI as a program (against a real Prefect server and the scripted LLM server, 150 ms a call
so the LLM stage lasts a few seconds), once on a pseudo-terminal (python's pty: what a person at
a terminal sees, escape codes and all) and once with its output piped (what CI or a log gets).
The index is built fresh (its own GECKO_HOME), so the first run embeds.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from gecko_factory.testing.launch import ScriptedServer

pytestmark = pytest.mark.timeout(600)

SEEDS = 24
COPY_TO = Path(__file__).resolve().parents[2] / "runs" / "progress-check"  # gitignored
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HIDE_CURSOR = "\x1b[?25l"  # rich's live display hides the cursor while it redraws


@pytest.fixture(scope="module")
def slow_llm():
    with ScriptedServer(latency_ms=150) as server:
        yield server


@pytest.fixture(scope="module")
def env(tmp_path_factory, prefect_server, slow_llm, wiki_sample):
    tmp = tmp_path_factory.mktemp("progress")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample))  # ~170 paragraphs to embed
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "LINES")}
    env.update(PREFECT_API_URL=prefect_server["api"], PREFECT_HOME=str(prefect_server["home"]),
               OPENAI_BASE_URL=slow_llm.base_url, GECKO_LLM_MODEL="scripted",
               GECKO_HOME=str(tmp / "gecko-home"), TERM="xterm-256color",
               # A fixed 2 calls in flight, so the seeds finish one by one: with the adaptive
               # limit a shard's 8 seeds all run at once against this idle server and finish
               # together, and the display has no count between shard boundaries to show
               # (CI saw {0, 16, 24}).
               GECKO_LLM_CONCURRENCY="2")
    return tmp, corpus, env


def _args(corpus, out, limit: int) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "run", "--corpus", str(corpus), "--out", str(out),
            "--limit", str(limit), "--candidates", "4", "--shard-size", "8"]


def _run_on_a_terminal(args: list[str], env: dict, timeout: float = 400) -> tuple[int, str]:
    """Run `args` with stdin, stdout and stderr on a 200-column pseudo-terminal; all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_sees_the_index_then_the_seeds_move(env):
    tmp, corpus, environ = env
    out = tmp / "tty-run"
    rc, raw = _run_on_a_terminal(_args(corpus, out, SEEDS), environ)
    text = ANSI.sub("", raw).replace("\r", "\n")
    COPY_TO.mkdir(parents=True, exist_ok=True)
    (COPY_TO / "terminal.txt").write_text(raw)  # `cat` it in a terminal to replay the display
    assert rc == 0, text[-4000:]
    assert HIDE_CURSOR in raw  # a live display, redrawn in place
    paragraphs = json.loads((out / "plan.json").read_text())["corpus_count"]
    # the index: paragraphs embedded of all, at a rate
    assert re.search(r"(embedding paragraphs|index built)\s.*\d+/" + str(paragraphs), text), text[-4000:]
    assert re.search(r"\d[\d,]* paragraphs/s", text)
    assert f"{paragraphs}/{paragraphs}" in text
    # the seeds: counted one by one, not a shard (8 seeds) at a time, with the LLM's figures
    counts = {int(n) for n in re.findall(rf"seeds\s.*?(\d+)/{SEEDS}\b", text)}
    assert SEEDS in counts and len(counts) >= 3, counts
    assert any(n % 8 for n in counts), counts  # a count between shard boundaries
    assert re.search(r"[\d,]+ LLM calls, \d+\.\d calls/s", text) and re.search(r"[\d,]+ tokens", text)
    assert "3/3 shards" in text
    assert "ETA" in text
    assert "examples written" in text  # the summary after it
    # the snapshots the display read, as the run left them
    snaps = {p.name: json.loads(p.read_text()) for p in (out / "progress").iterdir()}
    assert snaps["index.json"]["state"] == "done" and snaps["index.json"]["embedded"] == paragraphs
    assert sum(s["seeds_done"] for n, s in snaps.items() if n.startswith("part-")) == SEEDS


def test_a_pipe_gets_no_live_display(env):
    tmp, corpus, environ = env
    out = tmp / "piped-run"
    result = subprocess.run(_args(corpus, out, 8), env=environ, capture_output=True, text=True, timeout=400)
    both = result.stdout + result.stderr
    assert result.returncode == 0, both[-4000:]
    assert HIDE_CURSOR not in both and "\x1b[" not in both  # no redraws, no colour codes
    assert "━" not in both and not re.search(rf"seeds\s.*\d+/8\b", both)  # no bars
    assert "examples written" in both  # the summary, as plain text
    # the files were written all the same: the flow's artifact reads them
    assert json.loads((out / "progress" / "index.json").read_text())["state"] == "reused"
