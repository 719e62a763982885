"""Mining stage: the top-N corpus neighbours of each generated query.

Entry point: `mine(index, query_vectors, seed_ids, n, ef) -> list[list[Candidate]]`. The seed
paragraph is always among the candidates (Gecko relabels only among candidates that include it):
when the index does not return it, it takes the place of the last neighbour.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from gecko_factory.index import LoadedIndex


@dataclass(frozen=True)
class Candidate:
    id: str
    retrieval_rank: int  # 1 = nearest


def knn(index: LoadedIndex, query_vectors: np.ndarray, k: int, ef: int) -> np.ndarray:
    """Labels (row numbers) of the k nearest corpus vectors of each query, nearest first."""
    with index.lock:
        index.index.set_ef(max(ef, k))  # ef < k makes hnswlib fail or return fewer
        labels, _ = index.index.knn_query(query_vectors, k=k, num_threads=os.cpu_count() or 1)
    return np.asarray(labels)


def mine(index: LoadedIndex, query_vectors: np.ndarray, seed_ids: list[str], n: int,
         ef: int) -> list[list[Candidate]]:
    if len(seed_ids) != len(query_vectors):
        raise ValueError("one seed id per query vector")
    if len(seed_ids) == 0:
        return []
    labels = knn(index, query_vectors, min(n, len(index.ids)), ef)
    out: list[list[Candidate]] = []
    for row, seed in zip(labels, seed_ids):
        got = [index.ids[int(i)] for i in row]
        if seed not in got:
            got[-1] = seed
        out.append([Candidate(pid, rank) for rank, pid in enumerate(got, start=1)])
    return out
