"""The corpus-embedding cache: a hit is bit-identical to encoding afresh, anything that changes
the vectors misses, the folder stays bounded, and an export's test evaluation reuses what its
dev evaluation encoded (issue 14's experiment)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from gecko_factory.embedding_cache import EmbeddingCache, encoding_key
from gecko_factory.evaluate import RetrievalDataset, encode_texts, evaluate, load_beir
from gecko_factory.testing.labelled_set import make_beir
from gecko_factory.train.model import DualEncoder

pytestmark = pytest.mark.model  # loads a tiny BERT

TOPICS = ["protein folding", "volcanic ash", "neural networks", "coffee roasting",
          "glacier melt", "bee colonies", "solar panels", "tidal energy"]


def _dataset() -> RetrievalDataset:
    corpus = {f"d{i}": (t.title(), f"A paragraph about {t}, with more about {t}.")
              for i, t in enumerate(TOPICS)}
    queries = {f"q{i}": f"what about {TOPICS[i]}?" for i in range(4)}
    return RetrievalDataset("topics", corpus, queries, {f"q{i}": {f"d{i}"} for i in range(4)})


def test_a_hit_is_the_fresh_encoding_bit_for_bit(tiny_model, tmp_path):
    cache, data = EmbeddingCache(tmp_path / "emb"), _dataset()
    model = DualEncoder.from_pretrained(tiny_model)
    first = evaluate(model, data, cache=cache)
    second = evaluate(model, data, cache=cache)
    assert (first.corpus_cached, second.corpus_cached) == (False, True)
    assert second.scores == first.scores
    texts = [f"{t} {x}" for t, x in data.corpus.values()]
    key = encoding_key(model, texts, model.max_seq_len, 64, "cpu")
    assert np.array_equal(cache.get(key, len(texts)), encode_texts(model, texts, 64, model.max_seq_len))


def test_what_changes_the_vectors_changes_the_key(tiny_model):
    model = DualEncoder.from_pretrained(tiny_model)
    texts = ["A paragraph about bees.", "Another about tides."]
    key = encoding_key(model, texts, 256, 64, "cpu")
    assert encoding_key(model, texts, 256, 64, "cpu") == key  # stable
    assert encoding_key(model, texts[:1], 256, 64, "cpu") != key
    assert encoding_key(model, [texts[0] + " ", texts[1]], 256, 64, "cpu") != key
    assert encoding_key(model, texts, 128, 64, "cpu") != key
    assert encoding_key(model, texts, 256, 32, "cpu") != key  # padding moves the last digits
    assert encoding_key(model, texts, 256, 64, "cuda:0") != key
    with torch.no_grad():  # one weight, by the smallest step a float32 can take
        w = model.backbone.encoder.layer[1].output.dense.weight
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(1.0))
    assert encoding_key(model, texts, 256, 64, "cpu") != key
    # the same weights loaded again: the key is their content, not the object or the path
    assert encoding_key(DualEncoder.from_pretrained(tiny_model), texts, 256, 64, "cpu") == key


def test_the_folder_is_bounded_least_recently_used_first(tmp_path):
    cache = EmbeddingCache(tmp_path, max_bytes=3 * (128 + 4 * 10 * 4))  # three 10x4 arrays
    for i, key in enumerate("abcd"):
        cache.put(key, np.full((10, 4), i, dtype=np.float32))
        if key == "c":
            assert cache.get("a", 10) is not None  # "a" used again: "b" is now the oldest
    assert sorted(p.stem for p in tmp_path.glob("*.npy")) == ["a", "c", "d"]
    assert cache.get("d", 10)[0, 0] == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_a_damaged_or_foreign_file_is_encoded_again(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path)
    (tmp_path / "k.npy").write_bytes(b"not an array")
    cache.put("two", np.zeros((2, 4), dtype=np.float32))
    with caplog.at_level(logging.WARNING):
        assert cache.get("k", 2) is None
        assert cache.get("two", 3) is None  # another corpus size under this key: never served
    assert "unreadable k.npy" in caplog.text and "not 3 rows" in caplog.text


def test_the_export_reuses_its_dev_pass_and_every_run_the_base(tiny_model, tmp_path, monkeypatch):
    from gecko_factory.train.train import TrainConfig, train

    monkeypatch.setenv("GECKO_HOME", str(tmp_path / "home"))
    dev = str(make_beir(tmp_path / "dev"))
    run = _tiny_run(tmp_path / "run")
    files = lambda: sorted((tmp_path / "home" / "embeddings").glob("*.npy"))  # noqa: E731

    def config(out, seed):
        return TrainConfig(base_model=tiny_model, out_dir=str(out), batch_size=4, lr=1e-3,
                           warmup_steps=1, max_steps=2, max_seq_len=32, dims=[32],
                           eval_every=None, val_fraction=0.0, seed=seed, dev=dev)

    first = train(config(tmp_path / "m0", 0), [run])
    assert [s for s, _ in first.dev_ndcg] == [0, 2] and len(files()) == 2  # base, step 2
    report = evaluate(first.out_dir, load_beir(dev, "train"))
    assert report.corpus_cached  # the exported step's corpus pass, made during training
    assert report.scores[0].ndcg_at_10 == pytest.approx(first.selection.dev_selected, abs=1e-12)
    train(config(tmp_path / "m1", 1), [run])
    assert len(files()) == 3  # the base came from the cache; only the new step 2 was encoded


def _tiny_run(run):
    """Eight FRet rows over the topic paragraphs (what train needs: corpus + shards)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gecko_factory.schemas import FRET_SCHEMA, PARAGRAPH_SCHEMA

    (run / "shards").mkdir(parents=True)
    paragraphs = [{"id": f"p{i}", "title": t.title(), "text": f"A paragraph about {t}."}
                  for i, t in enumerate(TOPICS)]
    pq.write_table(pa.Table.from_pylist(paragraphs, schema=PARAGRAPH_SCHEMA), run / "corpus.parquet")
    rows = [{"example_id": f"e{i}", "seed_id": p["id"], "task_type": "retrieval",
             "task": "find a paragraph", "query": f"what is known about {TOPICS[i]}?",
             "positive_id": p["id"], "positive_title": p["title"], "positive_text": p["text"],
             "negative_id": n["id"], "negative_title": n["title"], "negative_text": n["text"],
             "relabelled": False, "candidates": [], "judge_mode": "rc_only", "fusion": "rrf",
             "llm_model": "fake", "judge_model": "fake", "prompt_version": "v0"}
            for i, (p, n) in enumerate(zip(paragraphs, paragraphs[1:] + paragraphs[:1]))]
    pq.write_table(pa.Table.from_pylist(rows, schema=FRET_SCHEMA), run / "shards" / "part-00000.parquet")
    (run / "manifest.json").write_text(json.dumps({"run": "tiny"}))
    return str(run)
