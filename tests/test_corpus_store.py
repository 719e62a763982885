"""The corpus lookup shards use: the same paragraphs as corpus.parquet, never a stale copy."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from gecko_factory import corpus_store
from gecko_factory import plan as plan_mod
from gecko_factory.config import FretConfig
from gecko_factory.corpus import CorpusSpec, Paragraph
from gecko_factory.corpus_store import ARROW_NAME, CorpusStore, open_corpus
from gecko_factory.plan import plan_run


def _plan(tmp_path, rows, name="c.jsonl", run="run", force=False):
    corpus = tmp_path / name
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan_run(FretConfig(corpus=CorpusSpec(path=str(corpus)), shard_size=4), tmp_path / run, force=force)
    return tmp_path / run


def _parquet_rows(run_dir) -> dict[str, Paragraph]:
    return {r["id"]: Paragraph(**r) for r in pq.read_table(run_dir / "corpus.parquet").to_pylist()}


def _assert_same(store: CorpusStore, run_dir) -> None:
    expected = _parquet_rows(run_dir)
    assert len(store) == len(expected)
    for pid, para in expected.items():
        assert pid in store
        assert store[pid] == para


def test_every_id_reads_back_as_in_the_parquet(tmp_path, wiki_sample, monkeypatch):
    # small batches that do not line up with the Parquet's row groups, and a short last one
    monkeypatch.setattr(corpus_store, "BATCH_ROWS", 7)
    monkeypatch.setattr(plan_mod, "WRITE_BATCH", 10)
    run = _plan(tmp_path, [{"id": f"p{i}", **r} for i, r in enumerate(wiki_sample[:50])]
                + [{"text": wiki_sample[50]["text"]}])  # no id: a content id, no title
    assert (run / ARROW_NAME).exists()  # written at plan time, not by the first shard
    store = open_corpus(run)
    _assert_same(store, run)
    assert open_corpus(run) is store  # once per process


def test_unknown_id_is_a_clear_key_error(tmp_path, wiki_sample):
    store = open_corpus(_plan(tmp_path, wiki_sample[:5]))
    with pytest.raises(KeyError, match=r"paragraph id 'no-such-id' is not in the run's corpus"):
        store["no-such-id"]
    assert "no-such-id" not in store
    assert 42 not in store  # not an id at all: absent, not an error


def test_a_replan_is_seen(tmp_path, wiki_sample):
    run = _plan(tmp_path, [{"id": f"a{i}", **r} for i, r in enumerate(wiki_sample[:10])])
    assert "a3" in open_corpus(run)
    _plan(tmp_path, [{"id": f"b{i}", **r} for i, r in enumerate(wiki_sample[10:25])], name="d.jsonl",
          force=True)
    store = open_corpus(run)
    assert "a3" not in store and "b3" in store
    _assert_same(store, run)


def test_parquet_replaced_by_an_older_version_is_not_read_from_the_stale_copy(tmp_path, wiki_sample):
    run = _plan(tmp_path, [{"id": f"a{i}", **r} for i, r in enumerate(wiki_sample[:10])])
    open_corpus(run)
    # what an older plan_run does: rewrite corpus.parquet only, leaving corpus.arrow as it was
    table = pq.read_table(run / "corpus.parquet").slice(0, 4)
    pq.write_table(table, run / "corpus.parquet")
    store = open_corpus(run)
    assert len(store) == 4 and "a7" not in store
    _assert_same(store, run)


def test_a_folder_with_only_corpus_parquet_still_works(tmp_path, wiki_sample):
    run = _plan(tmp_path, wiki_sample[:12])
    (run / ARROW_NAME).unlink()  # planned before corpus_store.py existed
    _assert_same(open_corpus(run), run)
    assert (run / ARROW_NAME).exists()
    assert not [p for p in os.listdir(run) if ".tmp" in p]


def test_a_truncated_copy_is_rewritten(tmp_path, wiki_sample):
    run = _plan(tmp_path, wiki_sample[:12])
    arrow = run / ARROW_NAME
    arrow.write_bytes(arrow.read_bytes()[:100])
    os.utime(run / "corpus.parquet", ns=(1, 1))  # a new mtime: not the cached store
    _assert_same(open_corpus(run), run)


def test_a_read_only_folder_falls_back_to_memory(tmp_path, wiki_sample, monkeypatch):
    run = _plan(tmp_path, wiki_sample[:12])
    (run / ARROW_NAME).unlink()

    def refuse(_):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(corpus_store, "write_arrow_copy", refuse)
    _assert_same(open_corpus(run), run)


def test_hash_collisions_are_told_apart(tmp_path, wiki_sample, monkeypatch):
    run = _plan(tmp_path, [{"id": f"p{i}", **r} for i, r in enumerate(wiki_sample[:30])])
    monkeypatch.setattr(corpus_store, "hash", lambda s: len(s) % 2, raising=False)  # all collide
    parquet = run / "corpus.parquet"
    store = corpus_store._open_copy(parquet, corpus_store._source_tag(parquet.stat()))  # not cached
    _assert_same(store, run)
    assert "p999" not in store
