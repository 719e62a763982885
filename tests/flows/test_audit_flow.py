"""`gecko-factory audit`, its flow and artifact, `--judge-mode auto`, and the card that shows the
audit of a run's judge: real Prefect runs over real HTTP to the scripted server."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from gecko_factory.options import RunOptions
from gecko_factory.testing.labelled_set import TRUTH, make_beir


@pytest.fixture(scope="module")
def env(tmp_path_factory, scripted_server):
    root = tmp_path_factory.mktemp("audit-flow")
    saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "GECKO_LLM_MODEL", "GECKO_HOME")}
    os.environ.update(OPENAI_BASE_URL=scripted_server.base_url, GECKO_LLM_MODEL="scripted",
                      GECKO_HOME=str(root / "home"))  # its own index cache and audit registry
    yield root, make_beir(root / "beir")
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def flow_audit(env, prefect_harness):
    from flows.audit import audit_flow

    root, beir = env
    state = audit_flow(beir=str(beir), limit=None, out=str(root / "out"), candidates=2,
                       judge_mode="two_prompt", return_state=True)
    assert state.is_completed(), state
    return root, state.result(), state.state_details.flow_run_id


def test_flow_writes_the_report_and_its_artifact(flow_audit):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tasks.audit_tasks import AUDIT_KEY

    root, report, run_id = flow_audit
    assert report["judged"] == 10 and report["identity"]["llm_model"] == "scripted"
    saved = json.loads((root / "out" / "audit.json").read_text())
    assert saved == report
    by_name = {r["name"]: r for r in report["reranker"]}
    assert by_name["retrieval order"]["p_at_1"] == pytest.approx(sum(t[0] for t in TRUTH) / 10)
    assert report["default_fusion"] in by_name
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    art = {a.key: a for a in found}[AUDIT_KEY]
    assert "| retrieval order | 0.600 (6/10) |" in art.data
    assert list((root / "home" / "audits").glob("*.md"))  # where a run's card finds it


def test_cli_rerun_asks_nothing_new_and_prints_the_tables(flow_audit, scripted_server):
    from flows.cli import app

    root, report, _ = flow_audit
    before = scripted_server.calls()
    result = CliRunner().invoke(app, ["audit", "--beir", str(root / "beir"), "--limit", "0",
                                      "--out", str(root / "out"), "--candidates", "2"])
    assert result.exit_code == 0, result.output
    assert scripted_server.calls() == before  # every query has its record: no LLM at all
    assert "| QL alone | 0.700 (7/10) |" in result.output and "wrong relabels" in result.output


def test_cli_without_the_default_labelled_set_says_where_it_looked(flow_audit, tmp_path, monkeypatch):
    from flows.cli import app

    monkeypatch.chdir(tmp_path)  # no ../shared/data/scifact.zip from here
    result = CliRunner().invoke(app, ["audit", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2
    assert "scifact.zip" in result.output and "--beir" in result.output


def test_auto_picks_the_cheapest_form_within_a_point(flow_audit):
    from flows.audit import auto_judge_mode
    from gecko_factory.audit.auto import FORMS, TOLERANCE

    root, _, _ = flow_audit
    choice = auto_judge_mode(candidates=2, limit=10, out=str(root / "out"), beir=str(root / "beir"))
    table = {t["mode"]: t for t in choice["table"]}
    assert set(table) == set(FORMS) and choice["mode"] in FORMS
    best = max(t["p_at_1"] for t in table.values())
    ok = [m for m, t in table.items() if t["p_at_1"] >= best - TOLERANCE]
    assert choice["mode"] == min(ok, key=lambda m: (table[m]["calls_per_query"], table[m]["seconds_per_query"]))
    assert table["one_pass"]["calls_per_query"] == 2 and table["two_prompt"]["calls_per_query"] == 4
    assert table["shared_prefix"]["calls_per_query"] == 2  # its two prompts go in one request


def test_a_run_card_shows_the_audit_of_its_judge(flow_audit, wiki_sample):
    from flows.fret import fret_flow
    from gecko_factory.card import run_card

    root, _, _ = flow_audit
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:12]))
    manifest = fret_flow(run_dir=str(root / "run"), options=RunOptions(
        corpus=str(corpus), limit=6, candidates=2, shard_size=6, judge_mode="two_prompt"))
    assert manifest["accounting_ok"]
    _, card = run_card(root / "run")
    assert "## Judge audit" in card and "| retrieval order | 0.600 (6/10) |" in card
