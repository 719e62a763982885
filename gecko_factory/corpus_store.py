"""The run's corpus as a read-only lookup by id that does not hold the paragraphs in memory.

Entry point: `open_corpus(run_dir) -> CorpusStore`, opened once per process (cached, and keyed
by corpus.parquet's size and mtime, so a re-planned run is seen). Shards look up a few thousand
paragraphs of a corpus that may hold millions; reading corpus.parquet into Python objects cost
~2 KiB a paragraph in every process that runs shards, for the whole LLM stage.

corpus.parquet stays the canonical file. Next to it, `write_arrow_copy` puts corpus.arrow: the
same rows in the same order, uncompressed, in Arrow's IPC file format, in record batches of a
fixed number of rows, so row r is in batch r // BATCH_ROWS and a lookup reads that one small
batch (pread, ~100 KB). It is read, not memory-mapped: a fault on a mapped file maps the 64 KiB
around it (the kernel's fault-around, which MADV_RANDOM does not stop), so a few thousand
lookups put most of the file in every shard process's RSS. The copy records the size and mtime
of the Parquet file it was made from, so a copy made for another corpus.parquet (a re-plan by an
older version, a file replaced by hand) is never used: it is rewritten. Folders planned before
this module existed get their copy on first open. The id -> row lookup is a sorted array of
64-bit hashes of the ids and their rows (16 bytes a paragraph), built from corpus.parquet's id
column alone and checked against the id itself, so hash collisions are harmless.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gecko_factory.corpus import Paragraph
from gecko_factory.schemas import PARAGRAPH_SCHEMA
from gecko_factory.files import atomic_file

log = logging.getLogger(__name__)

PARQUET_NAME = "corpus.parquet"
ARROW_NAME = "corpus.arrow"
# Rows per record batch of the copy: what one lookup reads (~100 KB of sample paragraphs).
BATCH_ROWS = 128
_SOURCE_KEY = b"gecko_factory.corpus_source"  # "size:mtime_ns" of the Parquet it was made from
_ROWS_KEY = b"gecko_factory.batch_rows"  # so a copy stays readable if BATCH_ROWS changes
_READ = {"batch_size": 8192, "use_threads": False}  # decoder threads only add allocator arenas


class CorpusStore:
    """Paragraphs by id, read a record batch at a time (`store[id] -> Paragraph`)."""

    def __init__(self, ids: Iterable[pa.Array], batch_rows: int,
                 get_batch: Callable[[int], pa.RecordBatch], where: str):
        # Python's str hash is fixed for the life of the process, which is all this table lives.
        chunks = [np.fromiter((hash(i) for i in a.to_pylist()), np.int64, len(a)) for a in ids]
        keys = np.concatenate(chunks) if chunks else np.empty(0, np.int64)
        self._rows = np.argsort(keys, kind="stable")
        self._keys = keys[self._rows]
        self._batch_rows, self._get_batch, self._where = batch_rows, get_batch, where

    def _find(self, pid: str) -> tuple[pa.RecordBatch, int] | None:
        if not isinstance(pid, str):
            return None
        key = hash(pid)
        pos = int(np.searchsorted(self._keys, key))
        while pos < len(self._keys) and self._keys[pos] == key:
            b, i = divmod(int(self._rows[pos]), self._batch_rows)
            batch = self._get_batch(b)
            if batch.column("id")[i].as_py() == pid:
                return batch, i
            pos += 1  # another id with the same hash
        return None

    def __getitem__(self, pid: str) -> Paragraph:
        found = self._find(pid)
        if found is None:
            raise KeyError(f"paragraph id {pid!r} is not in the run's corpus ({self._where})")
        batch, i = found
        return Paragraph(pid, batch.column("title")[i].as_py(), batch.column("text")[i].as_py())

    def __contains__(self, pid: object) -> bool:
        return self._find(pid) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._keys)


def _source_tag(st: os.stat_result) -> bytes:
    return f"{st.st_size}:{st.st_mtime_ns}".encode()


def write_arrow_copy(parquet: Path) -> Path:
    """Write corpus.arrow next to `parquet` from it, atomically, a record batch at a time."""
    arrow = parquet.with_name(ARROW_NAME)
    # processes may race to write it: each its own temp file
    with parquet.open("rb") as src, atomic_file(arrow, f".tmp-{os.getpid()}") as fh:
        # The tag describes the very bytes read, even if corpus.parquet is replaced meanwhile.
        schema = PARAGRAPH_SCHEMA.with_metadata({_SOURCE_KEY: _source_tag(os.fstat(src.fileno())),
                                                 _ROWS_KEY: str(BATCH_ROWS).encode()})
        with pa.ipc.new_file(fh, schema) as writer:
            pending = schema.empty_table()
            for batch in pq.ParquetFile(src).iter_batches(columns=schema.names, **_READ):
                # cast: a Parquet written by another tool may say large_string or nullable
                pending = pa.concat_tables([pending, pa.Table.from_arrays(
                    [batch.column(f.name).cast(f.type) for f in schema], schema=schema)])
                while pending.num_rows >= BATCH_ROWS:  # every batch full but the last
                    writer.write_table(pending.slice(0, BATCH_ROWS).combine_chunks())
                    pending = pending.slice(BATCH_ROWS)
            if pending.num_rows:
                writer.write_table(pending.combine_chunks())
    return arrow


def _open_copy(parquet: Path, tag: bytes) -> CorpusStore | None:
    """The store over corpus.arrow, if it exists, is whole, and was made from this Parquet."""
    try:
        reader = pa.ipc.open_file(pa.OSFile(str(parquet.with_name(ARROW_NAME))))
    except (OSError, pa.ArrowInvalid):
        return None  # missing, or cut short by a crash of an older writer
    meta = reader.schema.metadata or {}
    with parquet.open("rb") as src:
        if meta.get(_SOURCE_KEY) != tag or _source_tag(os.fstat(src.fileno())) != tag:
            return None
        rows = int(meta.get(_ROWS_KEY, 0))
        pf = pq.ParquetFile(src)
        if rows < 1 or reader.num_record_batches != -(-pf.metadata.num_rows // rows):
            return None
        ids = [b.column(0) for b in pf.iter_batches(columns=["id"], **_READ)]
    lock = threading.Lock()  # one reader, shared by the threads that run shards

    def get_batch(i: int) -> pa.RecordBatch:
        with lock:
            return reader.get_batch(i)

    return CorpusStore(ids, rows, get_batch, str(parquet.with_name(ARROW_NAME)))


@lru_cache(maxsize=2)
def _open(parquet: str, tag: bytes) -> CorpusStore:
    path = Path(parquet)
    store = _open_copy(path, tag)
    if store is not None:
        return store
    try:
        write_arrow_copy(path)
    except OSError as exc:  # a read-only run folder: Arrow in memory, ~1x the text, no objects
        log.warning("corpus: cannot write %s (%s); reading %s into memory", ARROW_NAME, exc, path)
        table = pq.read_table(path, columns=PARAGRAPH_SCHEMA.names).combine_chunks()
        batches = table.to_batches()  # one batch: combine_chunks left one chunk
        return CorpusStore([table.column("id")], max(1, table.num_rows), batches.__getitem__, parquet)
    store = _open_copy(path, tag)
    if store is None:
        raise RuntimeError(f"{path.with_name(ARROW_NAME)} does not match {path} even after rewriting "
                           "it: was the run re-planned while its shards run?")
    return store


def open_corpus(run_dir: Path) -> CorpusStore:
    """The run's corpus by id, opened once per process (a re-plan is seen: new size or mtime)."""
    parquet = run_dir / PARQUET_NAME
    return _open(str(parquet), _source_tag(parquet.stat()))
