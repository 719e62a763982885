"""Index stage: an HNSW (hnswlib, cosine) index over the whole corpus, with its id map.

Entry point: `build_index(IndexRequest) -> IndexInfo`. The index lives in a cache folder keyed by
the corpus hash, the encoder fingerprint (weights and precision: fp32 and int8 vectors never share
an index) and the index parameters, so a rerun (or another run over the same corpus) reuses it
instead of re-embedding everything. The folder is written under a temporary name and renamed
when complete: a crash never leaves a half index that looks whole.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import hnswlib
import numpy as np
import pyarrow.parquet as pq

from gecko_factory.config import IndexConfig
from gecko_factory.embed import Encoder
from gecko_factory.files import publish_dir
from gecko_factory.hashing import sha256_hex
from gecko_factory.progress import IndexProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexRequest:
    corpus_path: Path  # the run's corpus.parquet (PARAGRAPH_SCHEMA)
    corpus_hash: str
    encoder: str  # a run's `encoder` setting: NAME or NAME:int8 (embed.parse_encoder)
    params: IndexConfig
    cache_dir: Path
    batch_size: int = 64
    progress_file: Path | None = None  # where the build reports paragraphs embedded (progress.py)


@dataclass(frozen=True)
class IndexInfo:
    path: Path
    count: int
    dim: int
    reused: bool
    embed_seconds: float


def passage_text(title: str, text: str) -> str:
    """What the encoder sees of a paragraph: the title helps short leads a lot."""
    return f"{title}. {text}" if title else text


def index_key(req: IndexRequest, encoder_fingerprint: str) -> str:
    blob = json.dumps([req.corpus_hash, encoder_fingerprint, req.params.model_dump()], sort_keys=True)
    return sha256_hex(blob, length=20)


def build_hnsw(vectors: np.ndarray, params: IndexConfig, threads: int | None = None) -> hnswlib.Index:
    """The HNSW graph over `vectors` (row i gets label i), built on every core by default."""
    index = hnswlib.Index(space=params.space, dim=int(vectors.shape[1]))
    index.init_index(max_elements=max(len(vectors), 1), ef_construction=params.ef_construction,
                     M=params.M, random_seed=0)
    if len(vectors):
        index.add_items(vectors, np.arange(len(vectors)), num_threads=threads or os.cpu_count() or 1)
    return index


EMBED_CHUNK = 8192  # corpus rows read and embedded at a time (the encoder buckets inside it)


def build_index(req: IndexRequest) -> IndexInfo:
    import time

    corpus = pq.ParquetFile(req.corpus_path)
    progress = IndexProgress(req.progress_file, corpus.metadata.num_rows)  # "loading": seconds
    encoder = Encoder.load(req.encoder)
    final = req.cache_dir / index_key(req, encoder.fingerprint)
    meta_path = final / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        log.info("index: reusing %s (%d vectors)", final, meta["count"])
        progress.state("reused", embedded=meta["count"], total=meta["count"])
        return IndexInfo(final, meta["count"], meta["dim"], True, 0.0)

    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # The corpus is read and embedded a chunk at a time into a memory-mapped embeddings file:
    # holding every text at once cost ~2.4 KiB per paragraph at peak (bench/scale.py), more than
    # the index and the embeddings themselves.
    vectors = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32,
                                        shape=(corpus.metadata.num_rows, encoder.dim))
    ids: list[str] = []
    progress.state("embedding")
    t0 = time.perf_counter()
    for batch in corpus.iter_batches(batch_size=EMBED_CHUNK, columns=["id", "title", "text"]):
        texts = [passage_text(t, x) for t, x in zip(batch.column("title").to_pylist(),
                                                     batch.column("text").to_pylist())]
        vectors[len(ids) : len(ids) + len(texts)] = encoder.encode(
            texts, batch_size=req.batch_size, on_batch=progress.embedded_batch)
        ids += batch.column("id").to_pylist()
    vectors.flush()
    embed_seconds = time.perf_counter() - t0

    progress.state("building")
    index = build_hnsw(vectors, req.params)
    index.save_index(str(tmp / "index.bin"))
    del index, vectors
    (tmp / "ids.json").write_text(json.dumps(ids))
    meta = {"count": len(ids), "dim": encoder.dim, "corpus_hash": req.corpus_hash,
            "encoder": req.encoder, "encoder_fingerprint": encoder.fingerprint,
            "encoder_precision": encoder.precision,
            "params": req.params.model_dump(), "embed_seconds": round(embed_seconds, 2)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    publish_dir(tmp, final)  # False: another process finished the same index first
    progress.state("done")
    log.info("index: built %s (%d vectors, embedded in %.1fs)", final, len(ids), embed_seconds)
    return IndexInfo(final, len(ids), encoder.dim, False, embed_seconds)


@dataclass
class LoadedIndex:
    index: hnswlib.Index
    ids: list[str]
    lock: threading.Lock  # hnswlib's ef is global state; searches set it, so serialise
    _labels: dict[str, int] | None = field(default=None, repr=False)

    def label_of(self, pid: str) -> int:
        """The index label (row) of a paragraph id; the map is built on first use."""
        if self._labels is None:
            self._labels = {p: i for i, p in enumerate(self.ids)}
        return self._labels[pid]


@lru_cache(maxsize=2)
def load_index(path: Path) -> LoadedIndex:
    meta = json.loads((path / "meta.json").read_text())
    index = hnswlib.Index(space=meta["params"]["space"], dim=meta["dim"])
    index.load_index(str(path / "index.bin"), max_elements=meta["count"])
    ids = json.loads((path / "ids.json").read_text())
    return LoadedIndex(index, ids, threading.Lock())
