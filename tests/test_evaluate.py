"""Retrieval metrics by hand, and the SciFact loader's counts."""

import math
from pathlib import Path

import numpy as np
import pytest

from gecko_factory.evaluate import (
    DatasetUnavailable, load_scifact, ndcg_at_k, parse_abstract, recall_at_k, search,
)

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact.zip"


def test_ndcg_and_recall_by_hand():
    ranked = ["a", "x", "b", "y", "z"]
    relevant = {"a", "b", "c"}
    # hits at ranks 1 and 3; the ideal list has all three relevant docs on top
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranked, relevant, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert recall_at_k(ranked, relevant, 100) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, relevant, 1) == pytest.approx(1 / 3)
    assert ndcg_at_k(["c", "a", "b"], relevant) == pytest.approx(1.0)


def test_chunked_search_is_exact():
    rng = np.random.default_rng(0)
    q, d = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(103, 8)).astype(np.float32)
    want = np.argsort(-(q @ d.T), axis=1)[:, :10]
    assert (search(q, d, k=10, chunk=7) == want).all()


def test_abstract_sentences_are_not_glued():
    assert parse_abstract("['One.'\n 'Two.']") == "One. Two."


def test_missing_zip_raises_dataset_unavailable(tmp_path):
    with pytest.raises(DatasetUnavailable, match="not found"):
        load_scifact(tmp_path / "absent.zip")


@pytest.mark.skipif(not SCIFACT.exists(), reason="scifact.zip not on this machine")
def test_scifact_counts():
    data = load_scifact(SCIFACT)
    assert len(data.corpus) == 5183
    assert len(data.queries) == 300
    assert data.n_qrels == 339


@pytest.mark.model  # a tiny BERT
def test_per_query_scores_average_to_the_figure_and_pair_in_the_comparison(tiny_model):
    from gecko_factory.evaluate import EvalReport, RetrievalDataset, compare_markdown, evaluate
    from gecko_factory.train.model import DualEncoder

    corpus = {f"d{i}": ("", f"A paragraph about topic number {i}.") for i in range(6)}
    data = RetrievalDataset("toy", corpus, {f"q{i}": f"topic {i}?" for i in range(6)},
                            {f"q{i}": {f"d{i}"} for i in range(0, 6, 2)})  # q1, q3, q5: no qrels
    report = evaluate(DualEncoder.from_pretrained(tiny_model), data, dims=[32, 16], cache=None)
    assert report.query_ids == ["q0", "q2", "q4"]
    for score in report.scores:
        assert len(score.ndcg_per_query) == 3
        assert np.mean(score.ndcg_per_query) == pytest.approx(score.ndcg_at_10)
    again = EvalReport.model_validate(report.model_dump())  # a Prefect task's result, say
    assert again.query_ids == report.query_ids and again.scores == report.scores
    worse = again.model_copy(deep=True)
    worse.scores[0].ndcg_per_query = [0.0] * 3
    worse.scores[0].ndcg_at_10 = 0.0
    d = -np.array(report.scores[0].ndcg_per_query)  # worse - report at 32 d
    table = compare_markdown(report, worse)
    assert f"| {d.std(ddof=1) / math.sqrt(3):.4f} |" in table.splitlines()[4]
    worse.query_ids = ["q0", "q2", "q5"]  # not the same queries: no paired SE
    assert "| – |" in compare_markdown(report, worse).splitlines()[4]
