"""HNSW build and search: recall against exact search, and the seed is always a candidate."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gecko_factory.config import IndexConfig
from gecko_factory.index import LoadedIndex, build_hnsw
from gecko_factory.mine import knn, mine, reserve


def _unit(rng, n, d=32):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _loaded(vectors):
    return LoadedIndex(build_hnsw(vectors, IndexConfig()), [f"p{i}" for i in range(len(vectors))],
                       threading.Lock())


def test_knn_recall_against_exact_search():
    rng = np.random.default_rng(0)
    docs, queries = _unit(rng, 3000), _unit(rng, 100)
    labels = knn(_loaded(docs), queries, k=20, ef=128)
    exact = np.argsort(-(queries @ docs.T), axis=1)[:, :20]
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(labels, exact)])
    assert recall >= 0.99
    assert (labels[:, 0] == exact[:, 0]).mean() >= 0.99


def test_mine_puts_the_seed_among_the_candidates():
    rng = np.random.default_rng(1)
    docs = _unit(rng, 200)
    index = _loaded(docs)
    far = -docs[5:6]  # the query points away from p5: p5 is not a neighbour
    out = mine(index, np.concatenate([docs[3:4], far]), ["p3", "p5"], n=5, ef=16)
    assert out[0][0].id == "p3" and out[0][0].retrieval_rank == 1
    assert [c.id for c in out[1]][-1] == "p5" and len(out[1]) == 5


def test_reserve_is_the_pool_beyond_the_candidates_with_true_ranks():
    rng = np.random.default_rng(2)
    docs = _unit(rng, 200)
    index = _loaded(docs)
    far = -docs[5:6]
    queries = np.concatenate([docs[3:4], far])
    mined = mine(index, queries, ["p3", "p5"], n=5, ef=64)
    spare = reserve(index, queries, mined, pool=12, ef=64)
    exact = np.argsort(-(queries @ docs.T), axis=1)[:, :12]
    # the first query's 5 candidates are its top 5: the reserve is ranks 6..12, nearest first
    assert [c.id for c in spare[0]] == [f"p{i}" for i in exact[0, 5:]]
    assert [c.retrieval_rank for c in spare[0]] == list(range(6, 13))
    assert spare[0][0].similarity == pytest.approx(float(queries[0] @ docs[exact[0, 5]]), abs=1e-5)
    # the second had the seed forced in over its 5th neighbour: that one is back in the reserve
    assert spare[1][0].retrieval_rank == 5 and len(spare[1]) == 8
    assert not {c.id for c in spare[1]} & {c.id for c in mined[1]}
    assert reserve(index, queries, mined, pool=5, ef=64) == [[], []]  # no pool beyond the N


def test_build_on_empty_vectors():
    index = build_hnsw(np.zeros((0, 8), dtype=np.float32), IndexConfig())
    assert index.get_current_count() == 0


def test_index_key_differs_between_encoder_precisions(tmp_path):
    from gecko_factory.embed import encoder_fingerprint
    from gecko_factory.index import IndexRequest, index_key

    req = IndexRequest(tmp_path / "corpus.parquet", "c0ffee", "all-MiniLM-L6-v2", IndexConfig(), tmp_path)
    fp32, int8 = encoder_fingerprint("w123", "fp32"), encoder_fingerprint("w123", "int8")
    assert fp32 == "w123"  # fp32 keeps the weights' hash: indexes built before int8 stay valid
    assert int8 != fp32 and len(int8) == 16
    assert index_key(req, fp32) != index_key(req, int8)
    assert encoder_fingerprint("w456", "int8") != int8  # other weights, other int8 vectors


def test_encoder_spec_names_the_precision(tmp_path):
    from gecko_factory.embed import parse_encoder

    assert parse_encoder("all-MiniLM-L6-v2") == ("all-MiniLM-L6-v2", "fp32")
    assert parse_encoder("all-MiniLM-L6-v2:int8") == ("all-MiniLM-L6-v2", "int8")
    assert parse_encoder("/models/tuned:int8") == ("/models/tuned", "int8")
    assert parse_encoder("/models/tuned:fp16") == ("/models/tuned:fp16", "fp32")  # not a precision
    odd = tmp_path / "model:int8"
    odd.mkdir()
    assert parse_encoder(str(odd)) == (str(odd), "fp32")  # an existing folder is that folder
