"""Shared fixtures: one Prefect test harness per session, the scripted LLM server, small corpora."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
