"""The negative-pool audit on a labelled set whose answers are known by construction: every
document is here twice (the copy one word longer) and each query is a document's own text, so at
N = 2 its candidates are the document and its twin, which the guard refuses; the pool must supply
every negative, and whether those are false negatives is set by what the labels include."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gecko_factory.audit.data import load_labelled, prepare_corpus
from gecko_factory.audit.negative_pool import negative_pool_audit
from gecko_factory.config import FretConfig

pytestmark = pytest.mark.model


def _twins(root: Path, wiki_sample: list[dict], everything_relevant: bool) -> Path:
    docs = [{"_id": f"d{i}", "title": "", "text": r["text"]} for i, r in enumerate(wiki_sample[:10])]
    docs += [{"_id": f"t{i}", "title": "", "text": r["text"] + " Indeed."} for i, r in enumerate(wiki_sample[:10])]
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": d["text"]}) + "\n"
                                                for i, d in enumerate(docs[:4])))
    qrels = [(f"q{i}", f"d{i}") for i in range(4)]
    if everything_relevant:  # every other document is labelled too: any pool negative is a false one
        qrels += [(f"q{i}", f"{kind}{j}") for i in range(4) for j in range(10) if j != i for kind in "dt"]
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                              + "".join(f"{q}\t{d}\t1\n" for q, d in qrels))
    return root


@pytest.mark.parametrize("everything_relevant", [False, True])
def test_the_pool_supplies_what_the_guard_refuses_and_its_false_negatives_are_counted(
        tmp_path, wiki_sample, everything_relevant):
    cfg = FretConfig(candidates=2, negative_pool=8)
    dataset = load_labelled(_twins(tmp_path / "beir", wiki_sample, everything_relevant), "train")
    got = negative_pool_audit(dataset, prepare_corpus(dataset, tmp_path / "audit", cfg), cfg)
    assert (got.queries, got.allowed_judged, got.no_judged_negative, got.pool_negative) == (4, 0, 4, 4)
    assert got.pool_negative_relevant == (4 if everything_relevant else 0)
    assert "4 of 4 (100.0%)" in got.to_markdown(2, 8)
    lone = FretConfig(candidates=2, negative_pool=0)  # no pool: nothing is supplied
    assert negative_pool_audit(dataset, prepare_corpus(dataset, tmp_path / "audit", lone), lone).pool_negative == 0
