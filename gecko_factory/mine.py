"""Mining stage: the top-N corpus neighbours of each generated query.

Entry point: `mine(index, query_vectors, seed_ids, n, ef) -> list[list[Candidate]]`; `reserve`
gives the neighbours beyond them, where the hard negative comes from when the guard lets no
judged candidate be one (fusion.reserve_negative). The seed
paragraph is always among the candidates (Gecko relabels only among candidates that include it):
when the index does not return it, it takes the place of the last neighbour (`with_seed`).
Each candidate carries its cosine similarity to the query and its unit vector: the hard-negative
guard needs both (TopK-PercPos compares query similarities; near-duplicates of the positive are
found by the candidates' cosine to each other), and they are free here, read from the index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from gecko_factory.index import LoadedIndex


@dataclass(frozen=True)
class Candidate:
    id: str
    retrieval_rank: int  # 1 = nearest
    similarity: float | None = None  # cosine(query, passage) from the index
    # The passage's unit vector as the index holds it; never written to a row.
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)


def cosine_lookup(candidates: list[Candidate]):
    """cosine(a, b) of two candidates' passage vectors by id (None when one is unknown): what the
    negative guard's near-duplicate test reads."""
    vectors = {c.id: c.vector for c in candidates}

    def cosine(a: str, b: str) -> float | None:
        va, vb = vectors.get(a), vectors.get(b)
        return None if va is None or vb is None else float(va @ vb)

    return cosine


def knn(index: LoadedIndex, query_vectors: np.ndarray, k: int, ef: int) -> np.ndarray:
    """Labels (row numbers) of the k nearest corpus vectors of each query, nearest first."""
    with index.lock:
        index.index.set_ef(max(ef, k))  # ef < k makes hnswlib fail or return fewer
        labels, _ = index.index.knn_query(query_vectors, k=k, num_threads=os.cpu_count() or 1)
    return np.asarray(labels)


def with_seed(got: list[str], seed: str) -> list[str]:
    """The neighbours with the seed forced in (it replaces the last one when absent)."""
    if seed in got:
        return got
    return got[:-1] + [seed]


def neighbours(index: LoadedIndex, query_vectors: np.ndarray, n: int, ef: int) -> list[list[str]]:
    """The ids of each query's top-n neighbours, nearest first (no seed forced in)."""
    labels = knn(index, query_vectors, min(n, len(index.ids)), ef)
    return [[index.ids[int(i)] for i in row] for row in labels]


def candidates_for(index: LoadedIndex, query_vector: np.ndarray, ids: list[str]) -> list[Candidate]:
    """`ids` (in retrieval order) as candidates with their similarity and vector from the index."""
    vectors = np.asarray(index.index.get_items([index.label_of(i) for i in ids]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)  # cosine space: unit
    sims = vectors @ np.asarray(query_vector, dtype=np.float32)
    return [Candidate(pid, rank, float(s), v)
            for rank, (pid, s, v) in enumerate(zip(ids, sims, vectors), start=1)]


def mine(index: LoadedIndex, query_vectors: np.ndarray, seed_ids: list[str], n: int,
         ef: int) -> list[list[Candidate]]:
    if len(seed_ids) != len(query_vectors):
        raise ValueError("one seed id per query vector")
    if len(seed_ids) == 0:
        return []
    got = neighbours(index, query_vectors, n, ef)
    return [candidates_for(index, q, with_seed(ids, seed))
            for q, ids, seed in zip(query_vectors, got, seed_ids)]


def reserve(index: LoadedIndex, query_vectors: np.ndarray, mined: list[list[Candidate]], pool: int,
            ef: int) -> list[list[Candidate]]:
    """Each query's retrieved neighbours within the top `pool` that are not among its mined
    candidates, nearest first, with their true retrieval ranks: where the hard negative may come
    from when the guard lets none of the judged candidates be one (fusion.reserve_negative).
    Nothing when `pool` does not reach past the candidates."""
    if not mined or pool <= max(len(c) for c in mined):
        return [[] for _ in mined]
    out = []
    for q, ids, judged in zip(query_vectors, neighbours(index, query_vectors, pool, ef), mined):
        taken = {c.id for c in judged}
        ranked = [(rank, pid) for rank, pid in enumerate(ids, start=1) if pid not in taken]
        found = candidates_for(index, q, [pid for _, pid in ranked]) if ranked else []
        out.append([Candidate(c.id, rank, c.similarity, c.vector) for (rank, _), c in zip(ranked, found)])
    return out

