"""An audit over a BEIR set made here (gecko_factory.testing.labelled_set), judged by the
scripted server, so the precision@1 of retrieval, QL, RC and every fusion is known before
anything runs. N = 2: the candidates are each topic's two documents.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gecko_factory.audit.judging import read_records, records_path
from gecko_factory.audit.run import AuditSpec, judge_step, report_step
from gecko_factory.config import FretConfig
from gecko_factory.templates import prompt_versions
from gecko_factory.llm.settings import LLMSettings
from gecko_factory.testing.labelled_set import TRUTH, make_beir


def expected():
    ret = sum(t[0] for t in TRUTH) / len(TRUTH)
    ql = sum(t[1] for t in TRUTH) / len(TRUTH)
    rc = sum(t[2] for t in TRUTH) / len(TRUTH)
    # RRF over two candidates: QL and RC agree → their pick; they disagree → a tie, which
    # keeps retrieval order (V first). keep_seed (retrieval's top is the prior here) moves off V
    # only when both signals prefer O: the same choice as RRF on two candidates.
    def rrf_right(r, q, c):
        if q == c:  # both right or both wrong together
            return q
        return r
    rrf = sum(rrf_right(*t) for t in TRUTH) / len(TRUTH)
    return ret, ql, rc, rrf


@pytest.fixture(scope="module")
def audited(tmp_path_factory, scripted_server):
    root = tmp_path_factory.mktemp("audit")
    beir = make_beir(root / "beir")
    fret = FretConfig(candidates=2, judge_mode="two_prompt", llm_model="scripted",
                      prompt_versions=prompt_versions("two_prompt"))
    spec = AuditSpec(beir=str(beir), out=str(root / "out"), fret=fret, limit=None,
                     fusions=["wrrf:retrieval=1,ql=1,rc=0"])
    settings = LLMSettings(_env_file=None, model="scripted")
    summary = judge_step(spec, settings, scripted_server.base_url)
    return spec, settings, summary, report_step(spec)


def test_precision_at_1_of_each_signal_is_what_was_built(audited):
    _, _, summary, report = audited
    assert summary.judged_now == 10 and not summary.failed and not summary.skipped
    assert report.covered == 10 and report.judged == 10 and report.pending == 0
    ret, ql, rc, rrf = expected()
    assert report.rank("retrieval order").p_at_1 == pytest.approx(ret)
    assert report.rank("QL alone").p_at_1 == pytest.approx(ql)
    assert report.rank("RC alone").p_at_1 == pytest.approx(rc)
    assert report.rank("rrf").p_at_1 == pytest.approx(rrf)
    assert report.rank("rrf+keep_seed").p_at_1 == pytest.approx(rrf)
    # wrrf with QL and retrieval alone: they disagree on 5 queries and tie (1 + 1/2 each): V
    assert report.rank("wrrf:retrieval=1,ql=1,rc=0").p_at_1 == pytest.approx(
        sum(r if r != q else q for r, q, _ in TRUTH) / 10)
    # two candidates, one labelled: MRR = (1 + p@1) / 2
    assert report.rank("QL alone").mrr == pytest.approx((1 + ql) / 2)
    assert report.chance_p_at_1 == pytest.approx(0.5)
    # reliability: above chance, as a share of the room above it; RC is below chance → 0
    assert report.weights == pytest.approx({"retrieval": 0.2, "ql": 0.4, "rc": 0.0})
    assert report.suggested_fusion == "wrrf:retrieval=0.2,ql=0.4,rc=0"


def test_fret_view_wrong_relabels_and_false_negatives(audited):
    _, _, _, report = audited
    by = {(f.fusion, f.guard): f for f in report.fret}
    # the labelled document is the seed: RRF relabels when both signals prefer the other (or,
    # when they split, when retrieval put the other first); keep_seed only in the first case
    rrf_wrong = sum(1 for r, q, c in TRUTH if not (q if q == c else r)) / 10
    keep_wrong = sum(1 for r, q, c in TRUTH if not q and not c) / 10
    gecko = by[("rrf", False)]
    assert gecko.wrong_relabel_rate == pytest.approx(rrf_wrong) == gecko.relabel_rate
    assert by[("rrf+keep_seed", False)].wrong_relabel_rate == pytest.approx(keep_wrong)
    # two candidates: a wrong positive leaves the labelled seed as Gecko's negative
    assert gecko.false_negative_rate == pytest.approx(rrf_wrong)
    guarded = by[("rrf", True)]
    assert guarded.false_negative_rate == 0.0  # the seed is never the negative
    assert guarded.no_negative_rate >= rrf_wrong  # those seeds have no safe negative left


def test_rerun_reuses_the_records_and_markdown_says_it(audited, scripted_server):
    spec, settings, summary, report = audited
    before = scripted_server.calls()
    again = judge_step(spec, settings, scripted_server.base_url)
    assert again.judged_now == 0 and again.reused == 10 and scripted_server.calls() - before <= 2  # probes
    records = read_records(records_path(spec.out_dir, summary.identity))
    assert all(len(r.candidates) == 2 and r.usage["calls"] == 4 for r in records.values())
    assert report.cost is not None and report.cost.calls_per_query == 4.0
    md = (spec.out_dir / "audit.md").read_text()
    assert "| retrieval order | 0.600 (6/10) |" in md and "rrf+keep_seed" in md


def test_a_beir_zip_reads_as_its_folder_and_a_missing_default_says_where(tmp_path, monkeypatch):
    import shutil

    from gecko_factory.audit.data import load_labelled
    from gecko_factory.evaluate import DatasetUnavailable

    folder = make_beir(tmp_path / "mini")
    archive = Path(shutil.make_archive(str(tmp_path / "mini"), "zip", tmp_path, "mini"))  # mini/… inside
    a, b = load_labelled(folder), load_labelled(archive)
    assert (a.corpus, a.queries, a.qrels) == (b.corpus, b.queries, b.qrels) and len(a.queries) == 10
    with pytest.raises(DatasetUnavailable, match="qrels/test.tsv"):
        load_labelled(folder, "test")
    monkeypatch.chdir(tmp_path)  # no ../shared/data/scifact.zip from here
    with pytest.raises(DatasetUnavailable, match=r"shared/data.*--beir"):
        load_labelled(None)


def test_a_server_without_prompt_logprobs_is_audited_rc_only(tmp_path):
    from gecko_factory.testing.launch import ScriptedServer

    fret = FretConfig(candidates=2, judge_mode="two_prompt", llm_model="scripted",
                      prompt_versions=prompt_versions("two_prompt"))
    spec = AuditSpec(beir=str(make_beir(tmp_path / "beir")), out=str(tmp_path / "out"), fret=fret,
                     limit=4)
    with ScriptedServer(prompt_logprobs=False) as server:
        summary = judge_step(spec, LLMSettings(_env_file=None, model="scripted"), server.base_url)
    assert summary.identity["judge_mode"] == "rc_only" and summary.judged_now == 4
    report = report_step(spec)
    names = [r.name for r in report.reranker]
    assert "QL alone" not in names and report.rank("RC alone").p_at_1 == pytest.approx(
        sum(t[2] for t in TRUTH[:4]) / 4)
    assert report.weights["ql"] == 0.0
