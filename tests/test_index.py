"""HNSW build and search: recall against exact search, and the seed is always a candidate."""

from __future__ import annotations

import threading

import numpy as np

from gecko_factory.config import IndexConfig
from gecko_factory.index import LoadedIndex, build_hnsw
from gecko_factory.mine import knn, mine


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


def test_build_on_empty_vectors():
    index = build_hnsw(np.zeros((0, 8), dtype=np.float32), IndexConfig())
    assert index.get_current_count() == 0
